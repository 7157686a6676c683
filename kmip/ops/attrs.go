package ops

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/hsmkms/hsmkms/kmip"
	"github.com/hsmkms/hsmkms/kmip/msg"
	"github.com/hsmkms/hsmkms/meta"
)

// Attribute names (KMIP 1.x spelling).
const (
	attrUID              = "Unique Identifier"
	attrName             = "Name"
	attrObjectType       = "Object Type"
	attrAlgorithm        = "Cryptographic Algorithm"
	attrLength           = "Cryptographic Length"
	attrUsageMask        = "Cryptographic Usage Mask"
	attrState            = "State"
	attrInitialDate      = "Initial Date"
	attrLastChange       = "Last Change Date"
	attrActivationDate   = "Activation Date"
	attrDeactivationDate = "Deactivation Date"
	attrDestroyDate      = "Destroy Date"
	attrCompromiseDate   = "Compromise Date"
	attrCompromiseOccur  = "Compromise Occurrence Date"
	attrRevocationReason = "Revocation Reason"
	attrDigest           = "Digest"
	attrSensitive        = "Sensitive"
	attrExtractable      = "Extractable"
	attrAlwaysSensitive  = "Always Sensitive"
	attrNeverExtractable = "Never Extractable"
	attrObjectGroup      = "Object Group"
	attrContact          = "Contact Information"
	attrOriginalCreation = "Original Creation Date"
	attrFresh            = "Fresh"
	attrLeaseTime        = "Lease Time"
	attrRNG              = "Random Number Generator"
)

// leaseTime is the Lease Time given to every key: how long a client may keep using
// material it fetched before it should check the key's state again. mongod and Percona
// poll every 900 s by default, well inside it.
const leaseTime = 3600

// attrSpec says what the server knows about an attribute: the version that introduced
// it, whether clients may set it at Create/Register, modify it later, and whether it
// may have several instances.
type attrSpec struct {
	since      msg.Version
	settable   bool // at Create / Register (and Add Attribute)
	modifiable bool // by Modify Attribute
	multi      bool
}

var specs = map[string]attrSpec{
	attrUID:                            {since: v10},
	attrName:                           {since: v10, settable: true, modifiable: true, multi: true},
	attrObjectType:                     {since: v10},
	attrAlgorithm:                      {since: v10, settable: true},
	attrLength:                         {since: v10, settable: true},
	attrUsageMask:                      {since: v10, settable: true},
	attrState:                          {since: v10},
	attrInitialDate:                    {since: v10},
	attrLastChange:                     {since: v10},
	attrActivationDate:                 {since: v10, settable: true, modifiable: true},
	attrDeactivationDate:               {since: v10, settable: true, modifiable: true},
	attrDestroyDate:                    {since: v10},
	attrCompromiseDate:                 {since: v10},
	attrCompromiseOccur:                {since: v10},
	attrRevocationReason:               {since: v10},
	attrDigest:                         {since: v10},
	attrObjectGroup:                    {since: v10, settable: true, modifiable: true, multi: true},
	attrContact:                        {since: v10, settable: true, modifiable: true},
	"Cryptographic Parameters":         {since: v10, settable: true, modifiable: true, multi: true},
	"Cryptographic Domain Parameters":  {since: v10, settable: true},
	"Operation Policy Name":            {since: v10, settable: true, modifiable: true},
	"Application Specific Information": {since: v10, settable: true, modifiable: true, multi: true},
	"Process Start Date":               {since: v10, settable: true, modifiable: true},
	"Protect Stop Date":                {since: v10, settable: true, modifiable: true},
	"Link":                             {since: v10, settable: true, modifiable: true, multi: true},
	attrFresh:                          {since: v11},
	attrLeaseTime:                      {since: v10},
	attrRNG:                            {since: v13},
	"Alternative Name":                 {since: v12, settable: true, modifiable: true, multi: true},
	attrOriginalCreation:               {since: v13, settable: true},
	"Description":                      {since: v14, settable: true, modifiable: true},
	"Comment":                          {since: v14, settable: true, modifiable: true},
	attrSensitive:                      {since: v14, settable: true, modifiable: true},
	attrExtractable:                    {since: v14, settable: true, modifiable: true},
	attrAlwaysSensitive:                {since: v14},
	attrNeverExtractable:               {since: v14},
	attrUsageLimits:                    {since: v10, settable: true},
	attrCertType:                       {since: v10},
	attrCertIdentifier:                 {since: v10},
	attrCertSubject:                    {since: v10},
	attrCertIssuer:                     {since: v10},
	attrCertLength:                     {since: v11},
	attrX509Identifier:                 {since: v11},
	attrX509Subject:                    {since: v11},
	attrX509Issuer:                     {since: v11},
	attrDigitalSignature:               {since: v11},
}

var (
	v10 = msg.Version{Major: 1, Minor: 0}
	v11 = msg.Version{Major: 1, Minor: 1}
	v12 = msg.Version{Major: 1, Minor: 2}
	v13 = msg.Version{Major: 1, Minor: 3}
	v14 = msg.Version{Major: 1, Minor: 4}
)

func isCustom(name string) bool {
	return strings.HasPrefix(name, "x-") || strings.HasPrefix(name, "y-")
}

// definedIn reports whether an attribute may appear in a reply of version v.
func definedIn(name string, v msg.Version) bool {
	if isCustom(name) {
		return true
	}
	s, ok := specs[name]
	return ok && v.AtLeast(s.since.Major, s.since.Minor)
}

// attr is one attribute instance with its value as a TTLV node tagged Attribute Value.
type attr struct {
	name  string
	index int
	value *msg.Node
}

func (a attr) node() *msg.Node {
	var idx *msg.Node
	if a.index > 0 {
		idx = msg.Int(kmip14.TagAttributeIndex, int32(a.index))
	}
	return msg.Struct(kmip14.TagAttribute, msg.Text(kmip14.TagAttributeName, a.name), idx, a.value)
}

func val(n *msg.Node) *msg.Node { n.Tag = kmip14.TagAttributeValue; return n }

func enumVal(v uint32) *msg.Node         { return msg.Enum(kmip14.TagAttributeValue, v) }
func intVal(v int32) *msg.Node           { return msg.Int(kmip14.TagAttributeValue, v) }
func textVal(v string) *msg.Node         { return msg.Text(kmip14.TagAttributeValue, v) }
func dateVal(v time.Time) *msg.Node      { return msg.Date(kmip14.TagAttributeValue, v) }
func boolVal(v bool) *msg.Node           { return msg.Bool(kmip14.TagAttributeValue, v) }
func structVal(c ...*msg.Node) *msg.Node { return msg.Struct(kmip14.TagAttributeValue, c...) }

// attributes lists every attribute of o: the ones meta keeps as typed fields first, in
// the order KMIP lists them, then the generic ones by name and index.
func attributes(o *meta.Object) []attr {
	out := []attr{
		{name: attrUID, value: textVal(o.ID)},
		{name: attrObjectType, value: enumVal(o.Type)},
	}
	if o.Algorithm != 0 {
		out = append(out, attr{name: attrAlgorithm, value: enumVal(o.Algorithm)})
	}
	if o.Length != 0 {
		out = append(out, attr{name: attrLength, value: intVal(o.Length)})
	}
	if hasMaterial(o.Type) {
		out = append(out, attr{name: attrUsageMask, value: intVal(o.UsageMask)})
	}
	out = append(out,
		attr{name: attrState, value: enumVal(o.State)},
		attr{name: attrInitialDate, value: dateVal(o.Created)},
		attr{name: attrLastChange, value: dateVal(o.Updated)},
	)
	for _, d := range []struct {
		name string
		t    time.Time
	}{
		{attrActivationDate, o.Activation},
		{attrDeactivationDate, o.Deactivation},
		{attrDestroyDate, o.Destroyed},
		{attrCompromiseDate, o.Compromise},
		{attrCompromiseOccur, o.CompromiseOccurrence},
	} {
		if !d.t.IsZero() {
			out = append(out, attr{name: d.name, value: dateVal(d.t)})
		}
	}
	if o.RevocationReason != 0 {
		var m *msg.Node
		if o.RevocationMessage != "" {
			m = msg.Text(kmip14.TagRevocationMessage, o.RevocationMessage)
		}
		out = append(out, attr{name: attrRevocationReason, value: structVal(
			msg.Enum(kmip14.TagRevocationReasonCode, o.RevocationReason), m)})
	}
	stored := map[string]bool{}
	for _, a := range o.Attrs {
		n, err := msg.Decode(a.Value)
		if err != nil {
			continue // written by us; cannot happen short of disk corruption, which SQLite detects
		}
		stored[a.Name] = true
		out = append(out, attr{name: a.Name, index: a.Index, value: n})
	}
	if hasMaterial(o.Type) {
		for _, d := range []attr{
			{name: attrSensitive, value: boolVal(false)},
			{name: attrExtractable, value: boolVal(true)},
			{name: attrAlwaysSensitive, value: boolVal(false)},
			{name: attrNeverExtractable, value: boolVal(false)},
			{name: attrFresh, value: boolVal(true)},
			{name: attrLeaseTime, value: val(msg.Interval(0, leaseTime))},
			{name: attrOriginalCreation, value: dateVal(o.Created)},
		} {
			if !stored[d.name] {
				out = append(out, d)
			}
		}
	}
	return out
}

// selectAttrs returns the attributes of o named in names (all of them when names is
// empty) that version v defines, in the order asked for.
func selectAttrs(o *meta.Object, names []string, v msg.Version) []attr {
	all := attributes(o)
	var out []attr
	if len(names) == 0 {
		for _, a := range all {
			if definedIn(a.name, v) {
				out = append(out, forVersion(a, v))
			}
		}
		return out
	}
	seen := map[string]bool{}
	for _, want := range names {
		if seen[want] || !definedIn(want, v) {
			continue
		}
		seen[want] = true
		for _, a := range all {
			if a.name == want {
				out = append(out, forVersion(a, v))
			}
		}
	}
	return out
}

// forVersion drops the parts of an attribute value that version v does not define:
// Digest gained its Key Format Type in KMIP 1.1.
func forVersion(a attr, v msg.Version) attr {
	if a.name == attrDigest && !v.AtLeast(1, 1) {
		c := *a.value
		c.Children = nil
		for _, ch := range a.value.Children {
			if ch.Tag != kmip14.TagKeyFormatType {
				c.Children = append(c.Children, ch)
			}
		}
		a.value = &c
	}
	return a
}

// parseAttribute reads one 1.x Attribute structure.
func parseAttribute(n *msg.Node) (attr, error) {
	name := n.Child(kmip14.TagAttributeName)
	if name == nil || name.Type != msg.TypeTextString {
		return attr{}, kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute has no Attribute Name")
	}
	a := attr{name: name.Text()}
	if idx := n.Child(kmip14.TagAttributeIndex); idx != nil {
		if idx.Type != msg.TypeInteger || idx.Int < 0 {
			return attr{}, kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q: invalid Attribute Index", a.name)
		}
		a.index = int(idx.Int)
	}
	a.value = n.Child(kmip14.TagAttributeValue)
	return a, nil
}

// expected TTLV type of each typed attribute's value, checked on input.
var valueTypes = map[string]ttlv.Type{
	attrAlgorithm:           msg.TypeEnumeration,
	attrLength:              msg.TypeInteger,
	attrUsageMask:           msg.TypeInteger,
	attrActivationDate:      msg.TypeDateTime,
	attrDeactivationDate:    msg.TypeDateTime,
	attrObjectGroup:         msg.TypeTextString,
	attrContact:             msg.TypeTextString,
	attrName:                msg.TypeStructure,
	attrSensitive:           msg.TypeBoolean,
	attrExtractable:         msg.TypeBoolean,
	"Process Start Date":    msg.TypeDateTime,
	"Protect Stop Date":     msg.TypeDateTime,
	"Description":           msg.TypeTextString,
	"Comment":               msg.TypeTextString,
	"Operation Policy Name": msg.TypeTextString,
}

// checkValue validates the value of a client-supplied attribute.
func checkValue(a attr) error {
	if a.value == nil {
		return kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q has no Attribute Value", a.name)
	}
	if t, ok := valueTypes[a.name]; ok && a.value.Type != t {
		return kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q must be %v, got %v", a.name, t, a.value.Type)
	}
	if a.name == attrUsageLimits {
		return checkUsageLimits(a.value) // usage.go
	}
	if a.name == attrName {
		nv := a.value.Child(kmip14.TagNameValue)
		if nv == nil || nv.Type != msg.TypeTextString {
			return kmip.Errorf(kmip14.ResultReasonInvalidField, "Name has no Name Value")
		}
	}
	return nil
}

// applyAttrs sets client-supplied attributes on a new object. now decides whether an
// Activation Date already passed.
func applyAttrs(o *meta.Object, in []attr, v msg.Version) error {
	for _, a := range in {
		if err := checkValue(a); err != nil {
			return err
		}
		spec, known := specs[a.name]
		switch {
		case isCustom(a.name):
		case !known:
			return kmip.Errorf(kmip14.ResultReasonInvalidField, "unknown attribute %q", a.name)
		case !spec.settable:
			return kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q is set by the server, not the client", a.name)
		case !v.AtLeast(spec.since.Major, spec.since.Minor):
			return kmip.Errorf(kmip14.ResultReasonInvalidField, "attribute %q is not defined in KMIP %v", a.name, v)
		}
		switch a.name {
		case attrAlgorithm:
			o.Algorithm = uint32(a.value.Int)
		case attrLength:
			o.Length = int32(a.value.Int)
		case attrUsageMask:
			o.UsageMask = int32(a.value.Int)
		case attrActivationDate:
			o.Activation = a.value.Time()
		case attrDeactivationDate:
			o.Deactivation = a.value.Time()
		default:
			if err := addGeneric(o, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// addGeneric stores a as a new instance of a generic attribute.
func addGeneric(o *meta.Object, a attr) error {
	spec := specs[a.name]
	idx := 0
	for _, x := range o.Attrs {
		if x.Name == a.name {
			if !spec.multi && !isCustom(a.name) {
				return kmip.Errorf(kmip14.ResultReasonIllegalOperation, "attribute %q may have only one instance", a.name)
			}
			if x.Index >= idx {
				idx = x.Index + 1
			}
		}
	}
	o.Attrs = append(o.Attrs, meta.Attr{Name: a.name, Index: idx, Value: encodeValue(a.value)})
	return nil
}

// setGeneric replaces (or creates) the single instance index of a generic attribute.
func setGeneric(o *meta.Object, name string, index int, value *msg.Node) {
	enc := encodeValue(value)
	for i := range o.Attrs {
		if o.Attrs[i].Name == name && o.Attrs[i].Index == index {
			o.Attrs[i].Value = enc
			return
		}
	}
	o.Attrs = append(o.Attrs, meta.Attr{Name: name, Index: index, Value: enc})
	sort.SliceStable(o.Attrs, func(i, j int) bool {
		if o.Attrs[i].Name != o.Attrs[j].Name {
			return o.Attrs[i].Name < o.Attrs[j].Name
		}
		return o.Attrs[i].Index < o.Attrs[j].Index
	})
}

// genericBool reads a Boolean generic attribute, def when absent.
func genericBool(o *meta.Object, name string, def bool) bool {
	for _, a := range o.Attrs {
		if a.Name == name && a.Index == 0 {
			if n, err := msg.Decode(a.Value); err == nil && n.Type == msg.TypeBoolean {
				return n.Int == 1
			}
		}
	}
	return def
}

// encodeValue is the stored form of an attribute value: its TTLV bytes with the tag
// normalised to Attribute Value, so Locate can match values byte for byte.
func encodeValue(n *msg.Node) []byte {
	c := *n
	c.Tag = kmip14.TagAttributeValue
	return c.Append(nil)
}

func hasMaterial(t uint32) bool {
	switch kmip14.ObjectType(t) {
	case kmip14.ObjectTypeSymmetricKey, kmip14.ObjectTypeSecretData, kmip14.ObjectTypePrivateKey,
		kmip14.ObjectTypePublicKey, kmip14.ObjectTypeSplitKey, kmip14.ObjectTypeOpaqueObject:
		return true
	}
	return false
}

// templateAttrs collects the Attribute children of a Template-Attribute (1.x).
// Template names (a deprecated 1.x feature) are refused explicitly.
func templateAttrs(tmpl *msg.Node) ([]attr, error) {
	if tmpl == nil {
		return nil, nil
	}
	if tmpl.Child(kmip14.TagName) != nil {
		return nil, kmip.Errorf(kmip14.ResultReasonFeatureNotSupported, "templates are not supported; send the attributes themselves")
	}
	var out []attr
	for _, n := range tmpl.All(kmip14.TagAttribute) {
		a, err := parseAttribute(n)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func describeValue(n *msg.Node) string {
	switch n.Type {
	case msg.TypeTextString:
		return n.Text()
	case msg.TypeByteString:
		return fmt.Sprintf("%x", n.Bytes)
	case msg.TypeDateTime:
		return n.Time().Format(time.RFC3339)
	case msg.TypeBoolean:
		return fmt.Sprint(n.Int == 1)
	case msg.TypeStructure:
		parts := make([]string, 0, len(n.Children))
		for _, c := range n.Children {
			parts = append(parts, fmt.Sprintf("%v=%s", c.Tag, describeValue(c)))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case msg.TypeEnumeration:
		return ttlv.DefaultRegistry.FormatEnum(n.Tag, uint32(n.Int))
	}
	return fmt.Sprint(n.Int)
}
