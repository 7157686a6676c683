package ops_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip/msg"
)

const (
	useSign   = int32(kmip14.CryptographicUsageMaskSign)
	useVerify = int32(kmip14.CryptographicUsageMaskVerify)
	useEnc    = int32(kmip14.CryptographicUsageMaskEncrypt)
	useDec    = int32(kmip14.CryptographicUsageMaskDecrypt)
	useWrap   = int32(kmip14.CryptographicUsageMaskWrapKey)
	useUnwrap = int32(kmip14.CryptographicUsageMaskUnwrapKey)
)

func usage(mask int32) *msg.Node { return attribute("Cryptographic Usage Mask", msg.Int(0, mask)) }

func activeNow() *msg.Node {
	return attribute("Activation Date", msg.Date(0, time.Now().Add(-time.Minute)))
}

// keyPair runs Create Key Pair and returns the private and public IDs.
func (f *fixture) keyPair(alg kmip14.CryptographicAlgorithm, length int32, prvMask, pubMask int32, common ...*msg.Node) (string, string) {
	f.t.Helper()
	c := msg.Struct(kmip14.TagCommonTemplateAttribute,
		attribute("Cryptographic Algorithm", msg.Enum(0, uint32(alg))),
		attribute("Cryptographic Length", msg.Int(0, length)), activeNow())
	c.Children = append(c.Children, common...)
	out := f.must("client", v14, kmip14.OperationCreateKeyPair, c,
		msg.Struct(kmip14.TagPrivateKeyTemplateAttribute, usage(prvMask)),
		msg.Struct(kmip14.TagPublicKeyTemplateAttribute, usage(pubMask)))
	return out.Child(kmip14.TagPrivateKeyUniqueIdentifier).Text(), out.Child(kmip14.TagPublicKeyUniqueIdentifier).Text()
}

// getKey runs Get, optionally in a format, and returns the Key Block.
func (f *fixture) getKey(id string, format kmip14.KeyFormatType) *msg.Node {
	f.t.Helper()
	args := []*msg.Node{uidNode(id)}
	if format != 0 {
		args = append(args, msg.Enum(kmip14.TagKeyFormatType, uint32(format)))
	}
	out := f.must("client", v14, kmip14.OperationGet, args...)
	for _, tag := range []ttlv.Tag{kmip14.TagPublicKey, kmip14.TagPrivateKey, kmip14.TagSymmetricKey} {
		if o := out.Child(tag); o != nil {
			return o.Child(kmip14.TagKeyBlock)
		}
	}
	f.t.Fatalf("Get returned no key: %v", out)
	return nil
}

func material(block *msg.Node) *msg.Node {
	return block.Child(kmip14.TagKeyValue).Child(kmip14.TagKeyMaterial)
}

func (f *fixture) attr(id, name string) *msg.Node {
	f.t.Helper()
	out := f.must("client", v14, kmip14.OperationGetAttributes, uidNode(id), msg.Text(kmip14.TagAttributeName, name))
	a := out.Child(kmip14.TagAttribute)
	if a == nil {
		f.t.Fatalf("object %s has no %s", id, name)
	}
	return a.Child(kmip14.TagAttributeValue)
}

func sigParams(children ...*msg.Node) *msg.Node {
	return msg.Struct(kmip14.TagCryptographicParameters, children...)
}

func (f *fixture) signVerify(prv, pub string, params *msg.Node) {
	f.t.Helper()
	data := []byte("the data to sign")
	sig := f.must("client", v14, kmip14.OperationSign, uidNode(prv), params, msg.Bytes(kmip14.TagData, data)).
		Child(kmip14.TagSignatureData).Bytes
	for _, tc := range []struct {
		data []byte
		want kmip14.ValidityIndicator
	}{{data, kmip14.ValidityIndicatorValid}, {[]byte("other data"), kmip14.ValidityIndicatorInvalid}} {
		out := f.must("client", v14, kmip14.OperationSignatureVerify, uidNode(pub), params,
			msg.Bytes(kmip14.TagData, tc.data), msg.Bytes(kmip14.TagSignatureData, sig))
		if got := kmip14.ValidityIndicator(out.Child(kmip14.TagValidityIndicator).Int); got != tc.want {
			f.t.Fatalf("Signature Verify of %q = %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestCreateKeyPairSign(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p384 := attribute("Cryptographic Domain Parameters", msg.Struct(0, msg.Enum(kmip14.TagRecommendedCurve, uint32(kmip14.RecommendedCurveP_384))))
	sha := func(h kmip14.HashingAlgorithm) *msg.Node { return msg.Enum(kmip14.TagHashingAlgorithm, uint32(h)) }
	for _, tc := range []struct {
		name   string
		alg    kmip14.CryptographicAlgorithm
		length int32
		extra  []*msg.Node
		params []*msg.Node
		bits   int32
	}{
		{"RSA-2048 PKCS#1 v1.5 default", kmip14.CryptographicAlgorithmRSA, 2048, nil, nil, 2048},
		{"RSA-2048 PSS SHA-256", kmip14.CryptographicAlgorithmRSA, 2048, nil, []*msg.Node{
			msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodPSS)), sha(kmip14.HashingAlgorithmSHA_256)}, 2048},
		{"RSA-3072 SHA-512 with RSA", kmip14.CryptographicAlgorithmRSA, 3072, nil, []*msg.Node{
			msg.Enum(kmip14.TagDigitalSignatureAlgorithm, uint32(kmip14.DigitalSignatureAlgorithmSHA_512WithRSAEncryption))}, 3072},
		{"EC P-256 by length", kmip14.CryptographicAlgorithmEC, 256, nil, nil, 256},
		{"ECDSA P-384 by domain parameters", kmip14.CryptographicAlgorithmECDSA, 0, []*msg.Node{p384}, []*msg.Node{sha(kmip14.HashingAlgorithmSHA_384)}, 384},
		{"EC P-521 ECDSA with SHA-512", kmip14.CryptographicAlgorithmEC, 521, nil, []*msg.Node{
			msg.Enum(kmip14.TagDigitalSignatureAlgorithm, uint32(kmip14.DigitalSignatureAlgorithmECDSAWithSHA512))}, 521},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			prv, pub := f.keyPair(tc.alg, tc.length, useSign, useVerify, tc.extra...)
			var params *msg.Node
			if tc.params != nil {
				params = sigParams(tc.params...)
			}
			f.signVerify(prv, pub, params)
			// Links point at each other; usage masks come from the specific templates.
			for _, l := range []struct {
				from, to string
				typ      kmip14.LinkType
			}{{prv, pub, kmip14.LinkTypePublicKeyLink}, {pub, prv, kmip14.LinkTypePrivateKeyLink}} {
				v := f.attr(l.from, "Link")
				if kmip14.LinkType(v.Child(kmip14.TagLinkType).Int) != l.typ || v.Child(kmip14.TagLinkedObjectIdentifier).Text() != l.to {
					t.Errorf("Link of %s = %v", l.from, v)
				}
			}
			if m := f.attr(prv, "Cryptographic Usage Mask").Int; int32(m) != useSign {
				t.Errorf("private usage mask %d", m)
			}
			if n := f.attr(pub, "Cryptographic Length").Int; int32(n) != tc.bits {
				t.Errorf("public key length %d, want %d", n, tc.bits)
			}
			// Get: the public key as SubjectPublicKeyInfo, the private key as PKCS#8, and
			// they match.
			spki := material(f.getKey(pub, 0)).Bytes
			pk, err := x509.ParsePKIXPublicKey(spki)
			if err != nil {
				t.Fatalf("public key: %v", err)
			}
			block := f.getKey(prv, 0)
			if kmip14.KeyFormatType(block.Child(kmip14.TagKeyFormatType).Int) != kmip14.KeyFormatTypePKCS_8 {
				t.Fatalf("private key format %v", block.Child(kmip14.TagKeyFormatType))
			}
			sk, err := x509.ParsePKCS8PrivateKey(material(block).Bytes)
			if err != nil {
				t.Fatalf("private key: %v", err)
			}
			if !sk.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pk) {
				t.Fatalf("the private key does not match the public key")
			}
			if d := f.attr(prv, "Digest").Child(kmip14.TagDigestValue).Bytes; !bytes.Equal(d, sha256Sum(material(block).Bytes)) {
				t.Errorf("private key Digest is not SHA-256 of its PKCS#8 encoding")
			}
		})
	}
	f.t = t
	prv, pub := f.keyPair(kmip14.CryptographicAlgorithmRSA, 2048, useSign, useVerify)
	for name, tc := range map[string]struct {
		op     kmip14.Operation
		args   []*msg.Node
		reason kmip14.ResultReason
	}{
		"RSA-1024": {kmip14.OperationCreateKeyPair, []*msg.Node{msg.Struct(kmip14.TagCommonTemplateAttribute,
			attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmRSA))),
			attribute("Cryptographic Length", msg.Int(0, 1024)))}, kmip14.ResultReasonInvalidField},
		"DSA": {kmip14.OperationCreateKeyPair, []*msg.Node{msg.Struct(kmip14.TagCommonTemplateAttribute,
			attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmDSA))),
			attribute("Cryptographic Length", msg.Int(0, 2048)))}, kmip14.ResultReasonInvalidField},
		"sign with the public key": {kmip14.OperationSign, []*msg.Node{uidNode(pub), msg.Bytes(kmip14.TagData, []byte("x"))},
			kmip14.ResultReasonInvalidField},
		"decrypt without Decrypt in the mask": {kmip14.OperationDecrypt, []*msg.Node{uidNode(prv), msg.Bytes(kmip14.TagData, make([]byte, 256))},
			kmip14.ResultReasonPermissionDenied},
		"ECDSA with an RSA key": {kmip14.OperationSign, []*msg.Node{uidNode(prv), sigParams(msg.Enum(kmip14.TagDigitalSignatureAlgorithm,
			uint32(kmip14.DigitalSignatureAlgorithmECDSAWithSHA256))), msg.Bytes(kmip14.TagData, []byte("x"))}, kmip14.ResultReasonInvalidField},
		"public key as Raw": {kmip14.OperationGet, []*msg.Node{uidNode(pub), msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw))},
			kmip14.ResultReasonKeyFormatTypeNotSupported},
		"private key as EC Private Key": {kmip14.OperationGet, []*msg.Node{uidNode(prv), msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeECPrivateKey))},
			kmip14.ResultReasonKeyFormatTypeNotSupported},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.call("client", v14, tc.op, tc.args...)
			wantReason(t, err, tc.reason)
		})
	}
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestGetFormats(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	prv, pub := f.keyPair(kmip14.CryptographicAlgorithmRSA, 2048, useSign, useVerify)
	spki := material(f.getKey(pub, 0)).Bytes
	pk, _ := x509.ParsePKIXPublicKey(spki)
	rpub := pk.(*rsa.PublicKey)
	if got := material(f.getKey(pub, kmip14.KeyFormatTypePKCS_1)).Bytes; !bytes.Equal(got, x509.MarshalPKCS1PublicKey(rpub)) {
		t.Errorf("PKCS#1 public key differs")
	}
	tr := material(f.getKey(pub, kmip14.KeyFormatTypeTransparentRSAPublicKey))
	if tr.Child(kmip14.TagModulus).Big().Cmp(rpub.N) != 0 || tr.Child(kmip14.TagPublicExponent).Big().Int64() != int64(rpub.E) {
		t.Errorf("Transparent RSA Public Key differs")
	}
	sk, _ := x509.ParsePKCS1PrivateKey(material(f.getKey(prv, kmip14.KeyFormatTypePKCS_1)).Bytes)
	if sk == nil || !sk.PublicKey.Equal(rpub) {
		t.Fatalf("PKCS#1 private key does not match")
	}
	trp := material(f.getKey(prv, kmip14.KeyFormatTypeTransparentRSAPrivateKey))
	if trp.Child(kmip14.TagPrivateExponent).Big().Cmp(sk.D) != 0 || trp.Child(kmip14.TagP).Big().Cmp(sk.Primes[0]) != 0 {
		t.Errorf("Transparent RSA Private Key differs")
	}
	eprv, epub := f.keyPair(kmip14.CryptographicAlgorithmEC, 256, useSign, useVerify)
	ek, _ := x509.ParseECPrivateKey(material(f.getKey(eprv, kmip14.KeyFormatTypeECPrivateKey)).Bytes)
	q := material(f.getKey(epub, kmip14.KeyFormatTypeTransparentECPublicKey)).Child(kmip14.TagQString).Bytes
	if ek == nil {
		t.Fatalf("EC Private Key does not parse")
	}
	if want, _ := ek.PublicKey.Bytes(); !bytes.Equal(q, want) {
		t.Errorf("Transparent EC public Q String does not match the private key")
	}
	_, err := f.call("client", v14, kmip14.OperationGet, uidNode(epub), msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypePKCS_1)))
	wantReason(t, err, kmip14.ResultReasonKeyFormatTypeNotSupported)
}

func TestRSAOAEP(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	prv, pub := f.keyPair(kmip14.CryptographicAlgorithmRSA, 2048, useDec, useEnc)
	params := sigParams(msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmRSA)),
		msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodOAEP)),
		msg.Enum(kmip14.TagHashingAlgorithm, uint32(kmip14.HashingAlgorithmSHA_1)))
	ct := f.must("client", v14, kmip14.OperationEncrypt, uidNode(pub), params, msg.Bytes(kmip14.TagData, []byte("hello"))).Child(kmip14.TagData).Bytes
	if len(ct) != 256 {
		t.Fatalf("ciphertext of %d bytes", len(ct))
	}
	pt := f.must("client", v14, kmip14.OperationDecrypt, uidNode(prv), params, msg.Bytes(kmip14.TagData, ct)).Child(kmip14.TagData).Bytes
	if string(pt) != "hello" {
		t.Fatalf("Decrypt = %q", pt)
	}
	ct[0] ^= 1
	_, err := f.call("client", v14, kmip14.OperationDecrypt, uidNode(prv), params, msg.Bytes(kmip14.TagData, ct))
	wantReason(t, err, kmip14.ResultReasonCryptographicFailure)
	_, err = f.call("client", v14, kmip14.OperationEncrypt, uidNode(pub),
		sigParams(msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodPKCS1V1_5))), msg.Bytes(kmip14.TagData, []byte("x")))
	wantReason(t, err, kmip14.ResultReasonInvalidField)
}

func register(f *fixture, typ kmip14.ObjectType, obj *msg.Node, attrs ...*msg.Node) string {
	f.t.Helper()
	out := f.must("client", v14, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(typ)),
		msg.Struct(kmip14.TagTemplateAttribute, attrs...), obj)
	return out.Child(kmip14.TagUniqueIdentifier).Text()
}

func keyObject(tag ttlv.Tag, format kmip14.KeyFormatType, km *msg.Node, alg kmip14.CryptographicAlgorithm) *msg.Node {
	km.Tag = kmip14.TagKeyMaterial
	return msg.Struct(tag, msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(format)),
		msg.Struct(kmip14.TagKeyValue, km), msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(alg))))
}

func TestRegisterAsymmetric(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ekDER, _ := x509.MarshalECPrivateKey(ek)
	ek8, _ := x509.MarshalPKCS8PrivateKey(ek)
	rspki, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	espki, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	rsaAlg, ecAlg := kmip14.CryptographicAlgorithmRSA, kmip14.CryptographicAlgorithmEC
	for _, tc := range []struct {
		name   string
		typ    kmip14.ObjectType
		obj    *msg.Node
		format kmip14.KeyFormatType // what Get returns by default
		want   []byte
	}{
		{"RSA private PKCS#1", kmip14.ObjectTypePrivateKey, keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypePKCS_1,
			msg.Bytes(0, x509.MarshalPKCS1PrivateKey(rk)), rsaAlg), kmip14.KeyFormatTypePKCS_1, x509.MarshalPKCS1PrivateKey(rk)},
		{"EC private PKCS#8", kmip14.ObjectTypePrivateKey, keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypePKCS_8,
			msg.Bytes(0, ek8), ecAlg), kmip14.KeyFormatTypePKCS_8, ek8},
		{"EC private ECPrivateKey", kmip14.ObjectTypePrivateKey, keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypeECPrivateKey,
			msg.Bytes(0, ekDER), ecAlg), kmip14.KeyFormatTypeECPrivateKey, ekDER},
		{"RSA public X.509", kmip14.ObjectTypePublicKey, keyObject(kmip14.TagPublicKey, kmip14.KeyFormatTypeX_509,
			msg.Bytes(0, rspki), rsaAlg), kmip14.KeyFormatTypeX_509, rspki},
		{"RSA public PKCS#1", kmip14.ObjectTypePublicKey, keyObject(kmip14.TagPublicKey, kmip14.KeyFormatTypePKCS_1,
			msg.Bytes(0, x509.MarshalPKCS1PublicKey(&rk.PublicKey)), rsaAlg), kmip14.KeyFormatTypePKCS_1, x509.MarshalPKCS1PublicKey(&rk.PublicKey)},
		{"RSA public transparent", kmip14.ObjectTypePublicKey, keyObject(kmip14.TagPublicKey, kmip14.KeyFormatTypeTransparentRSAPublicKey,
			msg.Struct(0, msg.BigInt(kmip14.TagModulus, rk.N), msg.BigInt(kmip14.TagPublicExponent, big.NewInt(int64(rk.E)))), rsaAlg),
			kmip14.KeyFormatTypeX_509, rspki},
		{"EC public X.509", kmip14.ObjectTypePublicKey, keyObject(kmip14.TagPublicKey, kmip14.KeyFormatTypeX_509,
			msg.Bytes(0, espki), ecAlg), kmip14.KeyFormatTypeX_509, espki},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			id := register(f, tc.typ, tc.obj, usage(useSign|useVerify), activeNow())
			block := f.getKey(id, 0)
			if got := kmip14.KeyFormatType(block.Child(kmip14.TagKeyFormatType).Int); got != tc.format {
				t.Fatalf("Get format %v, want %v", got, tc.format)
			}
			if !bytes.Equal(material(block).Bytes, tc.want) {
				t.Fatalf("Get returned other key material")
			}
			if d := f.attr(id, "Digest").Child(kmip14.TagDigestValue).Bytes; !bytes.Equal(d, sha256Sum(tc.want)) {
				t.Errorf("Digest is not SHA-256 of the material in its format")
			}
		})
	}
	f.t = t
	// A registered private key signs inside the token; a registered public key verifies.
	prv := register(f, kmip14.ObjectTypePrivateKey, keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypePKCS_8, msg.Bytes(0, ek8), ecAlg),
		usage(useSign), activeNow())
	pub := register(f, kmip14.ObjectTypePublicKey, keyObject(kmip14.TagPublicKey, kmip14.KeyFormatTypeX_509, msg.Bytes(0, espki), ecAlg),
		usage(useVerify), activeNow())
	f.signVerify(prv, pub, nil)
	sig := f.must("client", v14, kmip14.OperationSign, uidNode(prv), msg.Bytes(kmip14.TagData, []byte("m"))).Child(kmip14.TagSignatureData).Bytes
	if h := sha256.Sum256([]byte("m")); !ecdsa.VerifyASN1(&ek.PublicKey, h[:], sig) {
		t.Errorf("the token's ECDSA signature does not verify with Go")
	}
	for name, obj := range map[string]*msg.Node{
		"garbage PKCS#8":  keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypePKCS_8, msg.Bytes(0, []byte{1, 2, 3}), ecAlg),
		"wrong algorithm": keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypePKCS_8, msg.Bytes(0, ek8), rsaAlg),
	} {
		_, err := f.call("client", v14, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypePrivateKey)),
			msg.Struct(kmip14.TagTemplateAttribute), obj)
		t.Run(name, func(t *testing.T) { wantReason(t, err, kmip14.ResultReasonInvalidField) })
	}
	_, err := f.call("client", v14, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypePrivateKey)),
		msg.Struct(kmip14.TagTemplateAttribute), keyObject(kmip14.TagPrivateKey, kmip14.KeyFormatTypeRaw, msg.Bytes(0, ek8), ecAlg))
	wantReason(t, err, kmip14.ResultReasonKeyFormatTypeNotSupported)

	// An X.509 certificate is stored as sent; its public key verifies.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "kmip test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ek.PublicKey, ek)
	if err != nil {
		t.Fatal(err)
	}
	cid := register(f, kmip14.ObjectTypeCertificate, msg.Struct(kmip14.TagCertificate,
		msg.Enum(kmip14.TagCertificateType, uint32(kmip14.CertificateTypeX_509)), msg.Bytes(kmip14.TagCertificateValue, certDER)),
		usage(useVerify), activeNow())
	got := f.must("client", v14, kmip14.OperationGet, uidNode(cid)).Child(kmip14.TagCertificate)
	if !bytes.Equal(got.Child(kmip14.TagCertificateValue).Bytes, certDER) {
		t.Errorf("Get returned another certificate")
	}
	if v := f.attr(cid, "X.509 Certificate Subject").Child(kmip14.TagSubjectDistinguishedName).Bytes; !bytes.Equal(v, mustParse(t, certDER).RawSubject) {
		t.Errorf("X.509 Certificate Subject = %x", v)
	}
	if v := f.attr(cid, "Certificate Type"); kmip14.CertificateType(v.Int) != kmip14.CertificateTypeX_509 {
		t.Errorf("Certificate Type = %v", v)
	}
	f.signVerify(prv, cid, nil)
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kws is a Key Wrapping Specification with Encrypt under kek.
func kws(kek string, params *msg.Node, extra ...*msg.Node) *msg.Node {
	n := msg.Struct(kmip14.TagKeyWrappingSpecification, msg.Enum(kmip14.TagWrappingMethod, uint32(kmip14.WrappingMethodEncrypt)),
		msg.Struct(kmip14.TagEncryptionKeyInformation, uidNode(kek), params))
	n.Children = append(n.Children, extra...)
	return n
}

func TestKeyWrapping(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	aesKey := func(mask int32) string {
		out := f.must("client", v14, kmip14.OperationCreate, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
			msg.Struct(kmip14.TagTemplateAttribute,
				attribute("Cryptographic Algorithm", msg.Enum(0, uint32(kmip14.CryptographicAlgorithmAES))),
				attribute("Cryptographic Length", msg.Int(0, 256)), usage(mask), activeNow()))
		return out.Child(kmip14.TagUniqueIdentifier).Text()
	}
	kek, target, plain := aesKey(useWrap|useUnwrap), aesKey(useEnc|useDec), aesKey(useEnc)
	rsaPrv, rsaPub := f.keyPair(kmip14.CryptographicAlgorithmRSA, 2048, useUnwrap, useWrap)
	ecPrv, ecPub := f.keyPair(kmip14.CryptographicAlgorithmEC, 256, useSign, useVerify)
	// Encrypting a block under two keys tells whether they are the same key.
	ecb := func(id string) []byte {
		return f.must("client", v14, kmip14.OperationEncrypt, uidNode(id), sigParams(
			msg.Enum(kmip14.TagBlockCipherMode, uint32(kmip14.BlockCipherModeECB)),
			msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodNone))), msg.Bytes(kmip14.TagData, make([]byte, 16))).Child(kmip14.TagData).Bytes
	}
	mode := func(m kmip14.BlockCipherMode) *msg.Node {
		return sigParams(msg.Enum(kmip14.TagBlockCipherMode, uint32(m)))
	}
	oaep := sigParams(msg.Enum(kmip14.TagPaddingMethod, uint32(kmip14.PaddingMethodOAEP)),
		msg.Enum(kmip14.TagHashingAlgorithm, uint32(kmip14.HashingAlgorithmSHA_1)))
	for _, tc := range []struct {
		name          string
		id            string
		typ           kmip14.ObjectType
		wrapKEK       string
		unwrapKEK     string
		params        *msg.Node
		format        kmip14.KeyFormatType
		alg           kmip14.CryptographicAlgorithm
		wantBlobBytes int
	}{
		{"AES under NIST key wrap", target, kmip14.ObjectTypeSymmetricKey, kek, kek, mode(kmip14.BlockCipherModeNISTKeyWrap), kmip14.KeyFormatTypeRaw, kmip14.CryptographicAlgorithmAES, 40},
		{"AES under AES key wrap padding", target, kmip14.ObjectTypeSymmetricKey, kek, kek, mode(kmip14.BlockCipherModeAESKeyWrapPadding), kmip14.KeyFormatTypeRaw, kmip14.CryptographicAlgorithmAES, 40},
		{"AES, default parameters", target, kmip14.ObjectTypeSymmetricKey, kek, kek, nil, kmip14.KeyFormatTypeRaw, kmip14.CryptographicAlgorithmAES, 40},
		{"AES under RSA-OAEP", target, kmip14.ObjectTypeSymmetricKey, rsaPub, rsaPrv, oaep, kmip14.KeyFormatTypeRaw, kmip14.CryptographicAlgorithmAES, 256},
		{"EC private key under AES key wrap padding", ecPrv, kmip14.ObjectTypePrivateKey, kek, kek, nil, kmip14.KeyFormatTypePKCS_8, kmip14.CryptographicAlgorithmEC, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			out := f.must("client", v14, kmip14.OperationGet, uidNode(tc.id), kws(tc.wrapKEK, tc.params))
			block := out.Child(objTag(tc.typ)).Child(kmip14.TagKeyBlock)
			kv := block.Child(kmip14.TagKeyValue)
			if kv.Type != msg.TypeByteString || (tc.wantBlobBytes != 0 && len(kv.Bytes) != tc.wantBlobBytes) {
				t.Fatalf("wrapped Key Value %v", kv)
			}
			kwd := block.Child(kmip14.TagKeyWrappingData)
			if kwd.Child(kmip14.TagEncryptionKeyInformation).Child(kmip14.TagUniqueIdentifier).Text() != tc.wrapKEK {
				t.Fatalf("Key Wrapping Data %v", kwd)
			}
			// Register it back, unwrapped inside the token with the matching key.
			in := msg.Struct(kmip14.TagKeyBlock, msg.Enum(kmip14.TagKeyFormatType, uint32(tc.format)), kv,
				msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(tc.alg)),
				msg.Struct(kmip14.TagKeyWrappingData, msg.Enum(kmip14.TagWrappingMethod, uint32(kmip14.WrappingMethodEncrypt)),
					msg.Struct(kmip14.TagEncryptionKeyInformation, uidNode(tc.unwrapKEK), tc.params)))
			mask := useEnc | useDec
			if tc.typ == kmip14.ObjectTypePrivateKey {
				mask = useSign
			}
			back := register(f, tc.typ, msg.Struct(objTag(tc.typ), in), usage(mask), activeNow())
			if tc.typ == kmip14.ObjectTypePrivateKey {
				f.signVerify(back, ecPub, nil)
				return
			}
			if !bytes.Equal(ecb(back), ecb(tc.id)) {
				t.Fatalf("the registered key is not the wrapped one")
			}
		})
	}
	f.t = t
	for name, tc := range map[string]struct {
		args   []*msg.Node
		reason kmip14.ResultReason
	}{
		"KEK without Wrap Key": {[]*msg.Node{uidNode(target), kws(plain, nil)}, kmip14.ResultReasonPermissionDenied},
		"MAC sign": {[]*msg.Node{uidNode(target), msg.Struct(kmip14.TagKeyWrappingSpecification,
			msg.Enum(kmip14.TagWrappingMethod, uint32(kmip14.WrappingMethodMACSign)))}, kmip14.ResultReasonFeatureNotSupported},
		"unknown KEK":       {[]*msg.Node{uidNode(target), kws("nope", nil)}, kmip14.ResultReasonItemNotFound},
		"public key target": {[]*msg.Node{uidNode(ecPub), kws(kek, nil)}, kmip14.ResultReasonFeatureNotSupported},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.call("client", v14, kmip14.OperationGet, tc.args...)
			wantReason(t, err, tc.reason)
		})
	}
	// A wrapped blob that fails authentication is refused.
	_, err := f.call("client", v14, kmip14.OperationRegister, msg.Enum(kmip14.TagObjectType, uint32(kmip14.ObjectTypeSymmetricKey)),
		msg.Struct(kmip14.TagTemplateAttribute), msg.Struct(kmip14.TagSymmetricKey, msg.Struct(kmip14.TagKeyBlock,
			msg.Enum(kmip14.TagKeyFormatType, uint32(kmip14.KeyFormatTypeRaw)), msg.Bytes(kmip14.TagKeyValue, make([]byte, 40)),
			msg.Enum(kmip14.TagCryptographicAlgorithm, uint32(kmip14.CryptographicAlgorithmAES)),
			msg.Struct(kmip14.TagKeyWrappingData, msg.Enum(kmip14.TagWrappingMethod, uint32(kmip14.WrappingMethodEncrypt)),
				msg.Struct(kmip14.TagEncryptionKeyInformation, uidNode(kek))))))
	wantReason(t, err, kmip14.ResultReasonCryptographicFailure)
}

func objTag(t kmip14.ObjectType) ttlv.Tag {
	if t == kmip14.ObjectTypePrivateKey {
		return kmip14.TagPrivateKey
	}
	return kmip14.TagSymmetricKey
}
