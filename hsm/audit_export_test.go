package hsm

import (
	"context"

	"github.com/miekg/pkcs11"
)

// AuditKeyAttrs reads CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_SIGN, CKA_ENCRYPT and
// CKA_TOKEN of the audit key (sessionCopy false) or of the session copy AuditMAC
// signs with, and tries to read its value (which must fail).
func (t *Token) AuditKeyAttrs(ctx context.Context, sessionCopy bool) (flags map[string]bool, valueErr error, err error) {
	if err := t.begin(); err != nil {
		return nil, nil, err
	}
	defer t.end()
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer func() { t.release(s, err) }()
	var h pkcs11.ObjectHandle
	if sessionCopy {
		e, err := t.auditKey()
		if err != nil {
			return nil, nil, err
		}
		defer t.unuse(e, &err)
		h = e.h
	} else if h, err = t.findKey(s.h, AuditLabel); err != nil {
		return nil, nil, err
	}
	names := map[uint]string{pkcs11.CKA_SENSITIVE: "sensitive", pkcs11.CKA_EXTRACTABLE: "extractable",
		pkcs11.CKA_SIGN: "sign", pkcs11.CKA_ENCRYPT: "encrypt", pkcs11.CKA_TOKEN: "token"}
	var tmpl []*pkcs11.Attribute
	for a := range names {
		tmpl = append(tmpl, pkcs11.NewAttribute(a, nil))
	}
	attrs, err := t.p11.GetAttributeValue(s.h, h, tmpl)
	if err != nil {
		return nil, nil, err
	}
	flags = map[string]bool{}
	for _, a := range attrs {
		flags[names[a.Type]] = len(a.Value) == 1 && a.Value[0] != 0
	}
	_, valueErr = t.p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	return flags, valueErr, nil
}
