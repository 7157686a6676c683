#!/usr/bin/python3
"""End-to-end checks of hsmkms with the real PyKMIP 0.10 client (ProxyKmipClient).

Driven by test/pykmip_e2e_test.go. Every step asserts the server's answer; the
first mismatch prints a line starting with "FAIL" to stderr and exits 1. Each
passed step prints "ok: ..." so a failing run shows how far it got.

Encrypt results are checked against a local AES computation with the key bytes
that Get returned, so the test proves the server used the key it claims to use.

Run with the Debian interpreter (/usr/bin/python3): python3-pykmip lives there.
"""

import argparse
import logging
import os
import sys

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from kmip.core import enums
from kmip.core.factories import attribute_values as attr_values
from kmip.core.factories import attributes as attr_factory
from kmip.pie import client as pie_client
from kmip.pie import exceptions as pie_exceptions
from kmip.pie import objects

VERSIONS = {
    "1.0": enums.KMIPVersion.KMIP_1_0,
    "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2,
    "1.3": enums.KMIPVersion.KMIP_1_3,
    "1.4": enums.KMIPVersion.KMIP_1_4,
}


def undecodable():
    """KMIP attribute names PyKMIP 0.10 has no value decoder for."""
    factory = attr_values.AttributeValueFactory()
    out = set(KMIP14_ATTRIBUTES_UNKNOWN_TO_PYKMIP)
    for a in enums.AttributeType:
        try:
            known = factory.create_attribute_value(a, None) is not None
        except Exception:
            known = False
        if not known:
            out.add(a.value)
    return out


# Attributes KMIP 1.4 defines that PyKMIP 0.10's AttributeType does not list.
KMIP14_ATTRIBUTES_UNKNOWN_TO_PYKMIP = (
    "Always Sensitive", "Extractable", "Never Extractable",
    "Random Number Generator", "PKCS#12 Friendly Name", "Description",
    "Comment", "Original Creation Date",
)

UNDECODABLE = undecodable()
# PyKMIP names the attribute in its error as an enum-style upper-case name.
UNDECODABLE_ENUM_NAMES = {
    n.replace(".", "_").replace(" ", "_").upper() for n in UNDECODABLE}


class ClientCannotDecode(Exception):
    """PyKMIP could not decode an attribute the server rightly returned."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class Suite:
    def __init__(self, args):
        self.args = args
        self.tag = "[kmip %s]" % args.version
        self.factory = attr_factory.AttributeFactory()
        # Names are unique per run so that Locate by name has one exact answer.
        self.prefix = "pykmip-%s-%s" % (args.version, os.urandom(4).hex())

    # -- reporting -----------------------------------------------------------

    def fail(self, what):
        sys.stderr.write("FAIL %s %s\n" % (self.tag, what))
        sys.stderr.flush()
        sys.exit(1)

    def ok(self, what):
        print("ok: %s %s" % (self.tag, what), flush=True)

    def expect(self, cond, what, got=None):
        if not cond:
            if got is not None:
                what = "%s (got %r)" % (what, got)
            self.fail(what)

    def call(self, what, fn, *a, **kw):
        """Run a client call that must succeed."""
        try:
            return fn(*a, **kw)
        except pie_exceptions.KmipOperationFailure as e:
            self.fail("%s: server answered failure: %s" % (what, e))
        except Exception as e:  # a protocol or parse error is a failure too
            self.fail("%s: %s: %s" % (what, type(e).__name__, e))

    def call_fails(self, what, fn, *a, **kw):
        """Run a client call that must fail with a KMIP operation failure."""
        try:
            res = fn(*a, **kw)
        except pie_exceptions.KmipOperationFailure as e:
            return e
        except Exception as e:
            self.fail("%s: expected a KMIP failure, got %s: %s"
                      % (what, type(e).__name__, e))
        self.fail("%s: expected a KMIP failure, server answered success %r"
                  % (what, res))

    # -- helpers ---------------------------------------------------------------

    def client(self, cert, key):
        c = pie_client.ProxyKmipClient(
            hostname=self.args.host,
            port=self.args.port,
            cert=cert,
            key=key,
            ca=self.args.ca,
            config_file="/dev/null",
            kmip_version=VERSIONS[self.args.version],
        )
        self.call("open TLS connection", c.open)
        return c

    def attrs(self, c, uid, names=None):
        try:
            got_uid, attrs = c.get_attributes(uid, names)
        except pie_exceptions.KmipOperationFailure as e:
            self.fail("get_attributes %s: server answered failure: %s"
                      % (uid, e))
        except Exception as e:
            # PyKMIP raises a bare Exception naming the attribute it lacks.
            msg = str(e)
            for prefix in ("No value type for ", "Unrecognized attribute type "):
                lacked = msg.removeprefix(prefix)
                if msg.startswith(prefix) and lacked in UNDECODABLE_ENUM_NAMES:
                    raise ClientCannotDecode(lacked)
            # PyKMIP 0.10 decodes Digest as if every version had its Key Format
            # Type, which KMIP 1.0 does not define (the OASIS 1.0 test cases
            # have none), so at 1.0 it runs off the end of the Digest value.
            if self.args.version == "1.0" and not names and \
                    msg == "unpack requires a buffer of 4 bytes":
                raise ClientCannotDecode("Digest")
            self.fail("get_attributes %s: %s: %s"
                      % (uid, type(e).__name__, e))
        self.expect(got_uid == uid, "get_attributes echoes the identifier %r"
                    % uid, got_uid)
        out = {}
        for a in attrs:
            out.setdefault(a.attribute_name.value, []).append(a.attribute_value)
        return out

    def all_attrs(self, c, uid):
        """Get Attributes with no names: the server returns every attribute.

        PyKMIP 0.10 cannot decode some attributes the KMIP spec defines (1.4's
        Always Sensitive, Extractable, Never Extractable; Link, Revocation
        Reason, ...): it raises "No value type for X" while reading the reply.
        That is the client's limitation, not a wrong reply, so only that exact
        failure, for an attribute PyKMIP really lacks, is tolerated; the same
        attributes are then read by name, leaving out the undecodable ones.
        """
        try:
            return self.attrs(c, uid)
        except ClientCannotDecode as e:
            lacked = e.name
            self.ok("known PyKMIP 0.10 limitation: cannot decode attribute "
                    "%r in a full Get Attributes reply" % lacked)
        listed = self.call("get_attribute_list", c.get_attribute_list, uid)
        skip = UNDECODABLE | ({"Digest"} if lacked == "Digest" else set())
        names = [n for n in listed if n not in skip]
        return self.attrs(c, uid, names)

    def state(self, c, uid):
        attrs = self.attrs(c, uid, ["State"])
        self.expect(list(attrs) == ["State"] and len(attrs["State"]) == 1,
                    "get_attributes(State) returns exactly one State",
                    sorted(attrs))
        return attrs["State"][0].value

    def attr(self, kind, value):
        return self.factory.create_attribute(kind, value)

    def local_cbc(self, key, iv, data):
        padder = padding.PKCS7(128).padder()
        padded = padder.update(data) + padder.finalize()
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return enc.update(padded) + enc.finalize()

    # -- the suite -----------------------------------------------------------

    def run(self):
        c = self.client(self.args.cert, self.args.key)
        name = self.prefix + "-created"

        # Create AES-256 with a name.
        uid = self.call("create AES-256", c.create,
                        enums.CryptographicAlgorithm.AES, 256, name=name)
        self.expect(isinstance(uid, str) and uid != "",
                    "create returns a unique identifier", uid)
        self.ok("create -> %s" % uid)

        # Get on a Pre-Active key (mongod does Create, Get, Activate).
        key = self.call("get created key", c.get, uid)
        self.expect(isinstance(key, objects.SymmetricKey),
                    "get returns a SymmetricKey", type(key).__name__)
        self.expect(key.cryptographic_algorithm ==
                    enums.CryptographicAlgorithm.AES,
                    "get: algorithm AES", key.cryptographic_algorithm)
        self.expect(key.cryptographic_length == 256, "get: length 256",
                    key.cryptographic_length)
        self.expect(key.key_format_type == enums.KeyFormatType.RAW,
                    "get: key format Raw", key.key_format_type)
        self.expect(len(key.value) == 32, "get: 32 key bytes", len(key.value))
        key_bytes = bytes(key.value)
        self.ok("get: SymmetricKey AES 256, 32 bytes")

        attrs = self.all_attrs(c, uid)
        self.expect("State" in attrs, "get_attributes: State present",
                    sorted(attrs))
        self.expect(attrs["State"][0].value == enums.State.PRE_ACTIVE,
                    "get_attributes: state Pre-Active", attrs["State"][0].value)
        names = [n.name_value.value for n in attrs.get("Name", [])]
        self.expect(names == [name], "get_attributes: Name", names)
        alg = attrs.get("Cryptographic Algorithm")
        self.expect(alg is not None and
                    alg[0].value == enums.CryptographicAlgorithm.AES,
                    "get_attributes: Cryptographic Algorithm AES", alg)
        length = attrs.get("Cryptographic Length")
        self.expect(length is not None and length[0].value == 256,
                    "get_attributes: Cryptographic Length 256", length)
        otype = attrs.get("Object Type")
        self.expect(otype is not None and
                    otype[0].value == enums.ObjectType.SYMMETRIC_KEY,
                    "get_attributes: Object Type SymmetricKey", otype)
        self.ok("get_attributes: Pre-Active, name, AES, 256")

        # Named attribute selection returns exactly what was asked for.
        sel = self.attrs(c, uid, ["Cryptographic Length", "Name"])
        self.expect(sorted(sel) == ["Cryptographic Length", "Name"],
                    "get_attributes with names returns only those", sorted(sel))
        listed = self.call("get_attribute_list", c.get_attribute_list, uid)
        for want in ("State", "Name", "Cryptographic Algorithm",
                     "Cryptographic Length", "Unique Identifier"):
            self.expect(want in listed, "get_attribute_list has %s" % want,
                        listed)
        self.ok("get_attributes by name, get_attribute_list")

        self.call("activate", c.activate, uid)
        st = self.state(c, uid)
        self.expect(st == enums.State.ACTIVE, "state Active after activate", st)
        self.ok("activate -> Active")

        if VERSIONS[self.args.version] >= enums.KMIPVersion.KMIP_1_2:
            self.crypt(c, uid, key_bytes)
        else:
            # Encrypt and Decrypt are KMIP 1.2 operations; a 1.0/1.1 client
            # has no business sending them.
            self.ok("encrypt/decrypt not run: not defined before KMIP 1.2")

        self.locate(c, uid, name)
        self.register(c)
        self.lifecycle(c, uid)
        self.active_destroy(c)
        self.access(c)
        c.close()
        print("PASS %s" % self.tag, flush=True)

    def crypt(self, c, uid, key_bytes):
        data = b"hsmkms pykmip e2e: attack at dawn, 47 bytes long"
        cbc = {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
            "block_cipher_mode": enums.BlockCipherMode.CBC,
            "padding_method": enums.PaddingMethod.PKCS5,
        }

        # Client-supplied IV: the result is fully determined, check it exactly.
        iv = bytes(range(16))
        ct, ret_iv = self.call("encrypt CBC with given IV", c.encrypt, data,
                               uid=uid, cryptographic_parameters=cbc,
                               iv_counter_nonce=iv)
        self.expect(ct == self.local_cbc(key_bytes, iv, data),
                    "encrypt CBC/PKCS5 with given IV matches local AES", ct.hex())
        self.expect(ret_iv in (None, iv),
                    "encrypt with given IV returns no other IV", ret_iv)
        pt = self.call("decrypt CBC with given IV", c.decrypt, ct, uid=uid,
                       cryptographic_parameters=cbc, iv_counter_nonce=iv)
        self.expect(pt == data, "decrypt with given IV round-trips", pt)
        self.ok("encrypt/decrypt CBC PKCS5 with given IV")

        # Server-generated IV (RandomIV true), as libmongocrypt delegated does.
        rnd = dict(cbc, random_iv=True)
        ct, ret_iv = self.call("encrypt CBC random IV", c.encrypt, data,
                               uid=uid, cryptographic_parameters=rnd)
        self.expect(ret_iv is not None and len(ret_iv) == 16,
                    "encrypt with RandomIV returns a 16-byte IV", ret_iv)
        self.expect(ct == self.local_cbc(key_bytes, ret_iv, data),
                    "encrypt with random IV matches local AES", ct.hex())
        pt = self.call("decrypt random-IV ciphertext", c.decrypt, ct, uid=uid,
                       cryptographic_parameters=cbc, iv_counter_nonce=ret_iv)
        self.expect(pt == data, "decrypt of random-IV ciphertext", pt)
        ct2, ret_iv2 = self.call("encrypt CBC random IV again", c.encrypt,
                                 data, uid=uid, cryptographic_parameters=rnd)
        self.expect(ret_iv2 != ret_iv and ct2 != ct,
                    "two random-IV encryptions differ", ret_iv2)
        self.ok("encrypt/decrypt CBC PKCS5 with server random IV")

        # No parameters at all: server default AES-CBC-PKCS5 with random IV.
        ct, ret_iv = self.call("encrypt without parameters", c.encrypt, data,
                               uid=uid)
        self.expect(ret_iv is not None and len(ret_iv) == 16,
                    "default encrypt returns a 16-byte IV", ret_iv)
        self.expect(ct == self.local_cbc(key_bytes, ret_iv, data),
                    "default encrypt is AES-CBC-PKCS5", ct.hex())
        pt = self.call("decrypt without parameters", c.decrypt, ct, uid=uid,
                       iv_counter_nonce=ret_iv)
        self.expect(pt == data, "default decrypt round-trips", pt)
        self.ok("encrypt/decrypt with server defaults")

    def locate(self, c, active_uid, name):
        # A second, Pre-Active key so the state and limit searches discriminate.
        other = self.call("create second key", c.create,
                          enums.CryptographicAlgorithm.AES, 128,
                          name=self.prefix + "-second")

        found = self.call("locate by name", c.locate, attributes=[
            self.attr(enums.AttributeType.NAME, name)])
        self.expect(found == [active_uid], "locate by name finds exactly the key",
                    found)

        found = self.call("locate by object type", c.locate, attributes=[
            self.attr(enums.AttributeType.OBJECT_TYPE,
                      enums.ObjectType.SYMMETRIC_KEY)])
        self.expect(active_uid in found and other in found,
                    "locate by object type finds both keys", found)

        found = self.call("locate by state Active", c.locate, attributes=[
            self.attr(enums.AttributeType.STATE, enums.State.ACTIVE)])
        self.expect(active_uid in found and other not in found,
                    "locate by state Active: active key only", found)
        found = self.call("locate by state Pre-Active", c.locate, attributes=[
            self.attr(enums.AttributeType.STATE, enums.State.PRE_ACTIVE)])
        self.expect(other in found and active_uid not in found,
                    "locate by state Pre-Active: pre-active key only", found)

        found = self.call("locate name + state", c.locate, attributes=[
            self.attr(enums.AttributeType.NAME, name),
            self.attr(enums.AttributeType.STATE, enums.State.PRE_ACTIVE)])
        self.expect(found == [], "locate name AND wrong state finds nothing",
                    found)

        found = self.call("locate maximum_items 1", c.locate, maximum_items=1,
                          attributes=[self.attr(
                              enums.AttributeType.OBJECT_TYPE,
                              enums.ObjectType.SYMMETRIC_KEY)])
        self.expect(len(found) == 1, "locate maximum_items=1 returns one id",
                    found)
        self.ok("locate by name, object type, state, maximum items")

    def register(self, c):
        material = bytes(range(0x40, 0x60))  # 32 known bytes
        sk = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256,
                                  material, name=self.prefix + "-registered")
        uid = self.call("register SymmetricKey", c.register, sk)
        got = self.call("get registered key", c.get, uid)
        self.expect(isinstance(got, objects.SymmetricKey),
                    "registered key comes back as SymmetricKey",
                    type(got).__name__)
        self.expect(bytes(got.value) == material,
                    "get returns the registered key bytes", bytes(got.value))
        self.expect(got.cryptographic_length == 256 and
                    got.cryptographic_algorithm ==
                    enums.CryptographicAlgorithm.AES,
                    "registered key keeps AES 256",
                    (got.cryptographic_algorithm, got.cryptographic_length))
        st = self.state(c, uid)
        self.expect(st == enums.State.PRE_ACTIVE,
                    "registered key starts Pre-Active", st)
        self.ok("register SymmetricKey -> get identical bytes")

        secret = os.urandom(96)  # what libmongocrypt registers
        sd = objects.SecretData(secret, enums.SecretDataType.SEED,
                                name=self.prefix + "-secret")
        uid = self.call("register SecretData", c.register, sd)
        got = self.call("get SecretData", c.get, uid)
        self.expect(isinstance(got, objects.SecretData),
                    "SecretData comes back as SecretData", type(got).__name__)
        self.expect(bytes(got.value) == secret,
                    "get returns the registered secret bytes",
                    bytes(got.value).hex())
        self.expect(got.data_type == enums.SecretDataType.SEED,
                    "SecretData keeps its type Seed", got.data_type)
        self.ok("register SecretData (Opaque) -> get identical bytes")

    def lifecycle(self, c, uid):
        self.call("revoke", c.revoke,
                  enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        st = self.state(c, uid)
        self.expect(st == enums.State.DEACTIVATED,
                    "state Deactivated after revoke", st)
        self.ok("revoke (cessation of operation) -> Deactivated")

        self.call("destroy deactivated key", c.destroy, uid)
        e = self.call_fails("get after destroy", c.get, uid)
        self.ok("get after destroy fails: %s" % e.reason.name)
        st = self.state(c, uid)
        self.expect(st == enums.State.DESTROYED,
                    "get_attributes after destroy: Destroyed", st)
        self.ok("destroy -> Destroyed")

    def active_destroy(self, c):
        uid = self.call("create key to destroy while active", c.create,
                        enums.CryptographicAlgorithm.AES, 256)
        self.call("activate", c.activate, uid)
        e = self.call_fails("destroy of an Active key", c.destroy, uid)
        st = self.state(c, uid)
        self.expect(st == enums.State.ACTIVE,
                    "key still Active after refused destroy", st)
        got = self.call("get after refused destroy", c.get, uid)
        self.expect(len(got.value) == 32, "key still readable", len(got.value))
        self.ok("destroy of an Active key refused: %s" % e.reason.name)

    def access(self, c):
        uid = self.call("create key for the access check", c.create,
                        enums.CryptographicAlgorithm.AES, 256,
                        name=self.prefix + "-private")
        other = self.client(self.args.other_cert, self.args.other_key)
        e = self.call_fails("other client get", other.get, uid)
        self.expect(e.reason == enums.ResultReason.PERMISSION_DENIED,
                    "other client's get is PermissionDenied", e.reason)
        e = self.call_fails("other client destroy", other.destroy, uid)
        self.expect(e.reason == enums.ResultReason.PERMISSION_DENIED,
                    "other client's destroy is PermissionDenied", e.reason)
        found = self.call("other client locate by name", other.locate,
                          attributes=[self.attr(enums.AttributeType.NAME,
                                                self.prefix + "-private")])
        self.expect(found == [], "other client cannot locate the key", found)
        other.close()
        self.ok("second client identity: PermissionDenied")

        if self.args.admin_cert:
            admin = self.client(self.args.admin_cert, self.args.admin_cert)
            got = self.call("admin get of a client key", admin.get, uid)
            self.expect(len(got.value) == 32, "admin reads the client key",
                        len(got.value))
            admin.close()
            self.ok("admin identity may read a client's key")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--other-cert", required=True)
    p.add_argument("--other-key", required=True)
    p.add_argument("--admin-cert", help="admin bundle (cert and key)")
    p.add_argument("--version", choices=sorted(VERSIONS), default="1.2")
    args = p.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    Suite(args).run()


if __name__ == "__main__":
    main()
