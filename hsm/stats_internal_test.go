package hsm

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestCKRName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   pkcs11.Error
		want string
	}{
		{pkcs11.CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
		{pkcs11.CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
		{pkcs11.CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
		{pkcs11.Error(0x7fff_fff1), "CKR_0x7FFFFFF1"},
	}
	for _, tt := range tests {
		if got := ckrName(tt.in); got != tt.want {
			t.Errorf("ckrName(%#x) = %q, want %q", uint(tt.in), got, tt.want)
		}
	}
}

func TestErrorCounts(t *testing.T) {
	t.Parallel()
	var c errorCounts
	c.count(nil)
	c.count(context.Canceled)
	c.count(fmt.Errorf("encrypt: %w", mapErr(pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID), opOther)))
	c.count(pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID))
	c.count(errors.Join(ErrBusy, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)))
	got := c.snapshot()
	if len(got) != 2 || got["CKR_SESSION_HANDLE_INVALID"] != 2 || got["CKR_DEVICE_ERROR"] != 1 {
		t.Errorf("counts %v", got)
	}
	got["CKR_DEVICE_ERROR"] = 99
	if c.snapshot()["CKR_DEVICE_ERROR"] != 1 {
		t.Error("snapshot shares the counter map")
	}
}
