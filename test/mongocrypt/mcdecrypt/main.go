//go:build e2e && cse

// Command mcdecrypt decrypts, in a process of its own, a value that libmongocrypt
// encrypted earlier with a KMIP-backed data key. A fresh process has an empty
// libmongocrypt key cache, so the decryption must fetch the master secret from
// the KMIP server again (a KMIP Get), which is what a driver does after a restart.
//
//	mcdecrypt -endpoint 127.0.0.1:5696 -bundle client.pem -ca ca.pem \
//	    -keydoc key.bson -ciphertext ct.bson
//
// It prints one JSON object: {"Plaintext": "...", "Exchanges": [...]}, where
// each exchange holds the raw TTLV request and reply (base64), and exits 1 with
// the reason on stderr when anything fails.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/hsmkms/hsmkms/test/mongocrypt"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mcdecrypt:", err)
		os.Exit(1)
	}
}

func run() error {
	endpoint := flag.String("endpoint", "", "KMIP server host:port")
	bundle := flag.String("bundle", "", "client certificate and key, one PEM file")
	ca := flag.String("ca", "", "CA certificate PEM")
	keyDoc := flag.String("keydoc", "", "data key document (BSON)")
	ciphertext := flag.String("ciphertext", "", "document {v: ciphertext} (BSON)")
	flag.Parse()
	if *endpoint == "" || *bundle == "" || *ca == "" || *keyDoc == "" || *ciphertext == "" {
		return errors.New("all of -endpoint -bundle -ca -keydoc -ciphertext are required")
	}
	cfg, err := tlsConfig(*bundle, *ca)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(*keyDoc)
	if err != nil {
		return fmt.Errorf("read key document: %w", err)
	}
	ct, err := os.ReadFile(*ciphertext)
	if err != nil {
		return fmt.Errorf("read ciphertext: %w", err)
	}

	c, err := mongocrypt.New(mongocrypt.Config{Endpoint: *endpoint, TLS: cfg})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pt, err := c.Decrypt(ctx, key, ct)
	out := struct {
		Plaintext string
		Exchanges []mongocrypt.Exchange
	}{pt, c.Exchanges()}
	if jerr := json.NewEncoder(os.Stdout).Encode(out); jerr != nil {
		return fmt.Errorf("write result: %w", jerr)
	}
	return err
}

func tlsConfig(bundlePath, caPath string) (*tls.Config, error) {
	b, err := os.ReadFile(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("read client bundle: %w", err)
	}
	cert, err := tls.X509KeyPair(b, b)
	if err != nil {
		return nil, fmt.Errorf("load client bundle %s: %w", bundlePath, err)
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load ca %s: no certificate", caPath)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
