package ops

import (
	"fmt"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/hsmkms/hsmkms/meta"
)

// Summary is an operator's view of an object: metadata only, never key material.
type Summary struct {
	ID           string    `json:"id"`
	Type         string    `json:"type"`  // e.g. "SymmetricKey"
	State        string    `json:"state"` // e.g. "Active"
	Names        []string  `json:"names,omitempty"`
	Algorithm    string    `json:"algorithm,omitempty"`
	Length       int32     `json:"length,omitempty"`
	Owner        string    `json:"owner"`
	Created      time.Time `json:"created"`
	Activation   time.Time `json:"activation,omitzero"`
	Deactivation time.Time `json:"deactivation,omitzero"`
	Destroyed    time.Time `json:"destroyed,omitzero"`
	// Attributes holds every attribute as "Name: value", in KMIP order.
	Attributes []string `json:"attributes"`
}

// Describe summarises o for `hsmkms keys list|show`.
func Describe(o *meta.Object) Summary {
	sum := Summary{
		ID:           o.ID,
		Type:         kmip14.ObjectType(o.Type).String(),
		State:        kmip14.State(o.State).String(),
		Length:       o.Length,
		Owner:        o.Owner,
		Created:      o.Created,
		Activation:   o.Activation,
		Deactivation: o.Deactivation,
		Destroyed:    o.Destroyed,
	}
	if o.Algorithm != 0 {
		sum.Algorithm = kmip14.CryptographicAlgorithm(o.Algorithm).String()
	}
	for _, a := range attributes(o) {
		v := describeValue(a.value)
		switch a.name {
		case attrName:
			if nv := a.value.Child(kmip14.TagNameValue); nv != nil {
				sum.Names = append(sum.Names, nv.Text())
			}
		case attrObjectType:
			v = sum.Type
		case attrState:
			v = sum.State
		case attrAlgorithm:
			v = sum.Algorithm
		}
		if a.index > 0 {
			sum.Attributes = append(sum.Attributes, fmt.Sprintf("%s[%d]: %s", a.name, a.index, v))
		} else {
			sum.Attributes = append(sum.Attributes, fmt.Sprintf("%s: %s", a.name, v))
		}
	}
	return sum
}
