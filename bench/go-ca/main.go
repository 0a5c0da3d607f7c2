// go-ca: a small Go CA for side-by-side measurement with svid-ca (bench/compare-go.mjs). It serves
// /istio.v1.auth.IstioCertificateService/CreateCertificate over gRPC/TLS (grpc-go, crypto/x509) the way
// istiod's CA does for the bench's workload: verify an RS256 service-account JWT against a JWKS file (issuer,
// audience, exp, nbf), parse the CSR and check its signature, authorize its single SPIFFE URI SAN against the
// token's namespace and service account, sign an X.509 SVID with svid-ca's leaf profile (empty subject,
// critical URI SAN, KU digitalSignature+keyEncipherment critical, EKU serverAuth+clientAuth, CA:false
// critical, AKI = the signer's SKI, no SKI, valid from 2 minutes before issuance) and answer
// [leaf, chain..., root] as istiod does. It is a benchmark peer, not a product: one signer, no reload.
//
// Built in GOPATH mode against Debian's Go packages (no module proxy needed):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/go-ca ./bench/go-ca
//
// The messages are read and written with protowire (no generated code): IstioCertificateRequest
// {string csr = 1; int64 validity_duration = 2; Struct metadata = 3} and IstioCertificateResponse
// {repeated string cert_chain = 1}. On start it prints one JSON line {"msg":"go-ca serving","grpc":"host:port"}.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec hands the handler the message bytes as they came and writes the bytes it returns.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) String() string { return "raw" }
func (rawCodec) Name() string   { return "proto" }

type signer struct {
	cert      *x509.Certificate
	key       crypto.Signer
	chainPems []string // the signing certificate and cert-chain.pem's certificates, each once, file order
	rootPem   string
}

type ca struct {
	signer      *signer
	jwks        map[string]*rsa.PublicKey
	issuer      string
	audience    string
	trustDomain string
	defaultTTL  time.Duration
	maxTTL      time.Duration
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC/TLS listen address")
	cacerts := flag.String("cacerts", "", "Istio cacerts folder: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem")
	jwksFile := flag.String("jwks", "", "JWKS file with the token issuer's RSA keys")
	issuer := flag.String("issuer", "", "the tokens' iss")
	audience := flag.String("audience", "istio-ca", "the audience tokens must carry")
	trustDomain := flag.String("trust-domain", "cluster.local", "trust domain of the SPIFFE IDs")
	defaultTTL := flag.Duration("default-ttl", 24*time.Hour, "lifetime when validity_duration <= 0")
	maxTTL := flag.Duration("max-ttl", 2160*time.Hour, "longest lifetime a caller may ask for")
	flag.Parse()

	s, err := loadSigner(*cacerts)
	if err != nil {
		log.Fatalf("--cacerts: %v", err)
	}
	keys, err := loadJwks(*jwksFile)
	if err != nil {
		log.Fatalf("--jwks: %v", err)
	}
	c := &ca{signer: s, jwks: keys, issuer: *issuer, audience: *audience, trustDomain: *trustDomain, defaultTTL: *defaultTTL, maxTTL: *maxTTL}
	serving, err := c.servingCertificate()
	if err != nil {
		log.Fatalf("serving certificate: %v", err)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("--listen: %v", err)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12})
	srv := grpc.NewServer(grpc.Creds(creds), grpc.CustomCodec(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "istio.v1.auth.IstioCertificateService",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "CreateCertificate",
			Handler: func(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				var in []byte
				if err := dec(&in); err != nil {
					return nil, err
				}
				out, err := c.createCertificate(ctx, in)
				if err != nil {
					return nil, err
				}
				return &out, nil
			},
		}},
		Streams:  []grpc.StreamDesc{},
		Metadata: "security/v1alpha1/ca.proto",
	}, struct{}{})
	line, _ := json.Marshal(map[string]string{"msg": "go-ca serving", "grpc": lis.Addr().String()})
	fmt.Println(string(line))
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

// createCertificate: authenticate, read and check the CSR, authorize its SPIFFE ID, sign, answer the chain.
func (c *ca) createCertificate(ctx context.Context, in []byte) ([]byte, error) {
	csrPem, validity, err := decodeRequest(in)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "request: %v", err)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "no Bearer token")
	}
	ns, sa, err := c.verifyToken(strings.TrimPrefix(auth[0], "Bearer "))
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "token: %v", err)
	}
	block, _ := pem.Decode([]byte(csrPem))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, status.Error(codes.InvalidArgument, "csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	want := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", c.trustDomain, ns, sa)
	if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) != 0 || csr.URIs[0].String() != want {
		return nil, status.Errorf(codes.PermissionDenied, "the CSR must name exactly %s", want)
	}
	ttl := time.Duration(validity) * time.Second
	if validity <= 0 {
		ttl = c.defaultTTL
	}
	if ttl > c.maxTTL {
		return nil, status.Errorf(codes.InvalidArgument, "validity_duration above max-ttl %s", c.maxTTL)
	}
	leaf, err := c.sign(csr.PublicKey, csr.URIs, nil, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign: %v", err)
	}
	chain := append([]string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf}))}, c.signer.chainPems...)
	return encodeResponse(append(chain, c.signer.rootPem)), nil
}

// sign issues a leaf with svid-ca's profile (see the header) for the given key and SANs.
func (c *ca) sign(pub interface{}, uris []*url.URL, dns []string, ttl time.Duration) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(c.signer.cert.NotAfter) {
		notAfter = c.signer.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-2 * time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  uris,
		DNSNames:              dns,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, c.signer.cert, pub, c.signer.key)
}

// servingCertificate: a P-256 key and a 24 h leaf for "localhost" from the signer (as svid-ca's serving certificate).
func (c *ca) servingCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := c.sign(&key.PublicKey, nil, []string{"localhost"}, 24*time.Hour)
	if err != nil {
		return tls.Certificate{}, err
	}
	out := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	for _, p := range c.signer.chainPems {
		b, _ := pem.Decode([]byte(p))
		out.Certificate = append(out.Certificate, b.Bytes)
	}
	return out, nil
}

// decodeRequest reads IstioCertificateRequest: csr (1, string), validity_duration (2, int64); others skipped.
func decodeRequest(b []byte) (string, int64, error) {
	var csr string
	var validity int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", 0, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return "", 0, protowire.ParseError(m)
			}
			csr, b = string(v), b[m:]
		case num == 2 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return "", 0, protowire.ParseError(m)
			}
			validity, b = int64(v), b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return "", 0, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	if csr == "" {
		return "", 0, errors.New("no csr")
	}
	return csr, validity, nil
}

// encodeResponse writes IstioCertificateResponse{cert_chain: chain}.
func encodeResponse(chain []string) []byte {
	var out []byte
	for _, c := range chain {
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendString(out, c)
	}
	return out
}

// verifyToken checks an RS256 JWT against the JWKS (kid), its iss, aud and exp (nbf if present, 60 s skew),
// and returns the Kubernetes namespace and service account it names.
func (c *ca) verifyToken(token string) (string, string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", errors.New("not a JWS compact serialization")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return "", "", err
	}
	if header.Alg != "RS256" {
		return "", "", fmt.Errorf("alg %q is not RS256", header.Alg)
	}
	key := c.jwks[header.Kid]
	if key == nil {
		return "", "", fmt.Errorf("no key %q in the JWKS", header.Kid)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", "", err
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], sig); err != nil {
		return "", "", errors.New("bad signature")
	}
	var claims struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Exp *int64          `json:"exp"`
		Nbf *int64          `json:"nbf"`
		K8s struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return "", "", err
	}
	now := time.Now().Unix()
	if claims.Iss != c.issuer {
		return "", "", fmt.Errorf("issuer %q", claims.Iss)
	}
	var auds []string
	if json.Unmarshal(claims.Aud, &auds) != nil {
		var one string
		if json.Unmarshal(claims.Aud, &one) != nil {
			return "", "", errors.New("no aud")
		}
		auds = []string{one}
	}
	found := false
	for _, a := range auds {
		found = found || a == c.audience
	}
	if !found {
		return "", "", fmt.Errorf("audience does not include %q", c.audience)
	}
	if claims.Exp == nil || *claims.Exp+60 <= now {
		return "", "", errors.New("expired or no exp")
	}
	if claims.Nbf != nil && *claims.Nbf-60 > now {
		return "", "", errors.New("not yet valid")
	}
	if claims.K8s.Namespace == "" || claims.K8s.ServiceAccount.Name == "" {
		return "", "", errors.New("no kubernetes.io namespace and service account")
	}
	return claims.K8s.Namespace, claims.K8s.ServiceAccount.Name, nil
}

func decodeSegment(seg string, v interface{}) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func loadJwks(file string) (map[string]*rsa.PublicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var set struct {
		Keys []struct {
			Kty, Kid, N, E string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	out := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("key %q: bad n or e", k.Kid)
		}
		out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if len(out) == 0 {
		return nil, errors.New("no RSA key")
	}
	return out, nil
}

func readCerts(file string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
		out = append(out, c)
	}
}

func loadSigner(dir string) (*signer, error) {
	certs, err := readCerts(filepath.Join(dir, "ca-cert.pem"))
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("ca-cert.pem: %v", err)
	}
	keyPem, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPem)
	if block == nil {
		return nil, errors.New("ca-key.pem: no PEM block")
	}
	var key interface{}
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
				return nil, errors.New("ca-key.pem: not a PKCS#8, SEC1 or PKCS#1 key")
			}
		}
	}
	chain, err := readCerts(filepath.Join(dir, "cert-chain.pem"))
	if err != nil {
		return nil, err
	}
	rootPem, err := os.ReadFile(filepath.Join(dir, "root-cert.pem"))
	if err != nil {
		return nil, err
	}
	s := &signer{cert: certs[0], key: key.(crypto.Signer), rootPem: string(rootPem)}
	seen := map[string]bool{}
	for _, c := range append([]*x509.Certificate{certs[0]}, chain...) {
		if seen[string(c.Raw)] {
			continue
		}
		seen[string(c.Raw)] = true
		s.chainPems = append(s.chainPems, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return s, nil
}
