"""PyKMIP's part in the disaster-recovery test.

seal: create and activate an AES-256 key, encrypt a message (AES-CBC, PKCS5, an IV the
      server chooses) and print {"uid", "iv", "ct"} as JSON.
open: decrypt that ciphertext with the same identifier on another appliance and exit 1
      unless it yields the message.
"""
import argparse
import json
import sys

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

PARAMS = {
    "block_cipher_mode": enums.BlockCipherMode.CBC,
    "padding_method": enums.PaddingMethod.PKCS5,
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "random_iv": True,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["seal", "open"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--message", required=True)
    p.add_argument("--sealed", help="the JSON seal printed")
    a = p.parse_args()
    c = ProxyKmipClient(hostname="127.0.0.1", port=a.port, cert=a.cert, key=a.cert,
                        ca=a.ca, config_file="/dev/null")
    with c:
        if a.mode == "seal":
            uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="pykmip-dr")
            c.activate(uid)
            ct, iv = c.encrypt(a.message.encode(), uid=uid, cryptographic_parameters=PARAMS)
            print(json.dumps({"uid": uid, "iv": iv.hex(), "ct": ct.hex()}))
            return 0
        s = json.loads(a.sealed)
        params = dict(PARAMS)
        del params["random_iv"]
        plain = c.decrypt(bytes.fromhex(s["ct"]), uid=s["uid"], cryptographic_parameters=params,
                          iv_counter_nonce=bytes.fromhex(s["iv"]))
        if plain != a.message.encode():
            print("decrypted %r, want %r" % (plain, a.message), file=sys.stderr)
            return 1
        print("opened")
        return 0


if __name__ == "__main__":
    sys.exit(main())
