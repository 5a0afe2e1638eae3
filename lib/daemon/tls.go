package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// TLSFlags are the certificate files of a command's listeners and of its
// outgoing gRPC connections. Each flag's default comes from the
// environment variable named beside it, so that a container can set them
// without a command line.
type TLSFlags struct {
	// Cert and Key make every listener TLS-only (CALMLINE_TLS_CERT,
	// CALMLINE_TLS_KEY).
	Cert, Key string
	// ClientCA verifies client certificates: gRPC clients must present
	// one it signed (mTLS between services); HTTP clients may present
	// none (CALMLINE_TLS_CLIENT_CA).
	ClientCA string
	// BackendCA verifies the services this one calls over gRPC and turns
	// TLS on for those calls (CALMLINE_BACKEND_CA).
	BackendCA string
	// BackendCert and BackendKey are the client certificate presented to
	// them (CALMLINE_BACKEND_CERT, CALMLINE_BACKEND_KEY).
	BackendCert, BackendKey string
	// BackendServerName, when set, is the name verified in every
	// backend's certificate instead of the host of its address
	// (CALMLINE_BACKEND_SERVER_NAME).
	BackendServerName string
}

// Register adds the flags to fs.
func (f *TLSFlags) Register(fs *flag.FlagSet) {
	str := func(p *string, name, env, usage string) {
		fs.StringVar(p, name, os.Getenv(env), usage+" (default $"+env+")")
	}
	str(&f.Cert, "tls-cert", "CALMLINE_TLS_CERT", "PEM certificate (chain) of the listeners: TLS on every port, gRPC and HTTP split by ALPN; re-read on SIGHUP")
	str(&f.Key, "tls-key", "CALMLINE_TLS_KEY", "PEM private key of --tls-cert")
	str(&f.ClientCA, "tls-client-ca", "CALMLINE_TLS_CLIENT_CA", "PEM CA certificates: gRPC clients must present a certificate they signed (mTLS); HTTP clients need none")
	str(&f.BackendCA, "backend-ca", "CALMLINE_BACKEND_CA", "PEM CA certificates that verify realtime, fullcall and escalation: outgoing gRPC uses TLS")
	str(&f.BackendCert, "backend-cert", "CALMLINE_BACKEND_CERT", "PEM client certificate presented to the backends (mTLS); re-read on SIGHUP")
	str(&f.BackendKey, "backend-key", "CALMLINE_BACKEND_KEY", "PEM private key of --backend-cert")
	str(&f.BackendServerName, "backend-server-name", "CALMLINE_BACKEND_SERVER_NAME", "name to verify in the backends' certificates (default: the host of each address)")
}

// TLS is the loaded configuration: Server for the listeners and Client for
// outgoing gRPC, each nil when not configured. The key pairs behind them
// are re-read by Reload, so certificates rotate without a restart;
// connections already open keep the certificate they started with.
type TLS struct {
	Server *tls.Config
	Client *tls.Config

	server, client *keyPair
}

// Load reads and checks the files. Errors name the file and what is wrong
// with it, never its contents.
func (f TLSFlags) Load() (*TLS, error) {
	t := &TLS{}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: --tls-cert and --tls-key go together")
	}
	if (f.BackendCert == "") != (f.BackendKey == "") {
		return nil, errors.New("tls: --backend-cert and --backend-key go together")
	}
	if f.Cert == "" && f.ClientCA != "" {
		return nil, errors.New("tls: --tls-client-ca needs --tls-cert and --tls-key")
	}
	if f.BackendCA == "" && f.BackendCert == "" && f.BackendServerName != "" {
		return nil, errors.New("tls: --backend-server-name needs --backend-ca or --backend-cert")
	}
	if f.Cert != "" {
		kp, err := loadKeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		t.server = kp
		t.Server = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return kp.get(), nil
			},
		}
		if f.ClientCA != "" {
			pool, err := loadPool(f.ClientCA)
			if err != nil {
				return nil, err
			}
			t.Server.ClientCAs = pool
			t.Server.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	if f.BackendCA != "" || f.BackendCert != "" {
		t.Client = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.BackendServerName}
		if f.BackendCA != "" {
			pool, err := loadPool(f.BackendCA)
			if err != nil {
				return nil, err
			}
			t.Client.RootCAs = pool
		}
		if f.BackendCert != "" {
			kp, err := loadKeyPair(f.BackendCert, f.BackendKey)
			if err != nil {
				return nil, err
			}
			t.client = kp
			t.Client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return kp.get(), nil
			}
		}
	}
	return t, nil
}

// Reload re-reads the key pairs. On error the pairs in use stay.
func (t *TLS) Reload() error {
	var errs []error
	for _, kp := range []*keyPair{t.server, t.client} {
		if kp != nil {
			errs = append(errs, kp.reload())
		}
	}
	return errors.Join(errs...)
}

// WatchTLS reloads t on SIGHUP until Close, logging each outcome. Start
// calls it for the flags' certificates.
func (e *Env) WatchTLS(t *TLS) {
	if t == nil || (t.server == nil && t.client == nil) {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	log := e.Telemetry.Logger
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				if err := t.Reload(); err != nil {
					log.Error("certificates not reloaded; the previous ones stay in use", "err", err)
				} else {
					log.Info("certificates reloaded")
				}
			case <-e.Ctx.Done():
				return
			}
		}
	}()
}

// keyPair is a certificate and key read from files, swapped on reload.
type keyPair struct {
	certFile, keyFile string
	mu                sync.RWMutex
	cert              *tls.Certificate
}

func loadKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

func (kp *keyPair) reload() error {
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		// crypto/tls's errors describe the PEM blocks' types and the
		// mismatch, not the key material.
		return fmt.Errorf("tls: key pair %s, %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.mu.Lock()
	kp.cert = &cert
	kp.mu.Unlock()
	return nil
}

func (kp *keyPair) get() *tls.Certificate {
	kp.mu.RLock()
	defer kp.mu.RUnlock()
	return kp.cert
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}
