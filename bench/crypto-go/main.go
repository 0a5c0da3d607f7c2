// What the cryptography of one certificate costs in Go's standard library on this machine, the counterpart of
// bench/crypto-cache.mjs (issue #14): `go run ./bench/crypto-go [MiB ...]` (default 1 4 16), or through
// `node bench/crypto-side-by-side.mjs`. For each size, 3,000 certificates' worth of crypto/x509 + crypto/ecdsa work,
// as bench/go-ca does per request: parse a never-seen P-256 public key from its SPKI DER, verify a signature with
// it (the CSR's), sign with the intermediate's key made once (the leaf), and verify an RS256 signature with a key
// made once (the service-account token); timed per certificate with getrusage (user + system), hot (back to back),
// then with MiB of memory touched (one byte per 64-byte line) before each certificate, then hot again.
// One OS thread (GOMAXPROCS=1) so that the garbage collector's work is counted where it runs.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
)

const n = 3000

func cpuMicros() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec)*1e6 + float64(ru.Utime.Usec+ru.Stime.Usec)
}

func main() {
	runtime.GOMAXPROCS(1)
	data := make([]byte, 300)
	rand.Read(data)
	digest := sha256.Sum256(data)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tokenKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tokenSig, _ := rsa.SignPKCS1v15(rand.Reader, tokenKey, crypto.SHA256, digest[:])
	spkis := make([][]byte, n)
	sigs := make([][]byte, n)
	for i := range spkis {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		spkis[i], _ = x509.MarshalPKIXPublicKey(&k.PublicKey)
		sigs[i], _ = ecdsa.SignASN1(rand.Reader, k, digest[:])
	}
	run := func(junk []byte, withToken bool) float64 {
		var total float64
		for i := 0; i < n; i++ {
			for at := 0; at < len(junk); at += 64 {
				junk[at]++
			}
			before := cpuMicros()
			pub, err := x509.ParsePKIXPublicKey(spkis[i])
			if err != nil {
				panic(err)
			}
			d := sha256.Sum256(data)
			if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d[:], sigs[i]) {
				panic("signature does not verify")
			}
			if _, err := ecdsa.SignASN1(rand.Reader, signer, d[:]); err != nil {
				panic(err)
			}
			if withToken {
				if err := rsa.VerifyPKCS1v15(&tokenKey.PublicKey, crypto.SHA256, d[:], tokenSig); err != nil {
					panic(err)
				}
			}
			total += cpuMicros() - before
		}
		return total / n
	}
	sizes := []int{1, 4, 16}
	if len(os.Args) > 1 {
		sizes = nil
		for _, a := range os.Args[1:] {
			v, err := strconv.Atoi(a)
			if err != nil {
				panic(err)
			}
			sizes = append(sizes, v)
		}
	}
	run(nil, true)
	for _, mib := range sizes {
		junk := make([]byte, mib<<20)
		fmt.Printf("%s: import + verify + sign per certificate: hot %.1f us, after touching %d MiB %.1f us, hot again %.1f us; with the RS256 token verify: hot %.1f us\n",
			runtime.Version(), run(nil, false), mib, run(junk, false), run(nil, false), run(nil, true))
	}
}
