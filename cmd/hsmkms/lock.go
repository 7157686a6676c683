package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// serveLockName is the advisory lock of an appliance directory. serve holds
// it for its whole life; restore, retire-master and an offline rotate-master
// take it too, because they write behind the server's object cache. The
// kernel drops the lock when its holder exits, even after kill -9.
const serveLockName = "serve.lock"

// errDirLocked means another process holds DIR/serve.lock.
var errDirLocked = errors.New("another hsmkms process holds the appliance lock")

// lockDir takes DIR/serve.lock without waiting. unlock releases it.
func lockDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, serveLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, errDirLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// lockServe is serve's lock: it refuses to start while a restore or an
// offline key rotation runs on dir.
func lockServe(dir string) (unlock func(), err error) {
	unlock, err = lockDir(dir)
	if errors.Is(err, errDirLocked) {
		return nil, fmt.Errorf("%w (another `hsmkms serve`, or a `backup restore` or `kek` command, is running on %s: wait for it or stop it)", err, dir)
	}
	return unlock, err
}

// lockOffline is the lock of commands that must not run beside serve.
func lockOffline(dir, what string) (unlock func(), err error) {
	unlock, err = lockDir(dir)
	if errors.Is(err, errDirLocked) {
		return nil, fmt.Errorf("%s: %w (`hsmkms serve` is running on %s: stop it first, because %s writes behind the server's object cache)", what, err, dir, what)
	}
	return unlock, err
}
