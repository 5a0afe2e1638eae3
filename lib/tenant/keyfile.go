package tenant

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// KeyFile edits the API keys of a tenants file in place, for
// "calmline keys": it changes only the api_keys entries it is asked to and
// keeps the rest of the file — comments, order, other settings — as it was
// (it edits the YAML node tree, not a decoded copy). Save checks the result
// as the services will read it and replaces the file atomically, so a
// running server, which reloads the file when it changes, sees either the
// old file or the new one, never half of one.
type KeyFile struct {
	path  string
	doc   yaml.Node
	mode  os.FileMode
	mtime time.Time
	// Now is the clock for expiry times and creation stamps; tests set it.
	Now func() time.Time
}

// KeyInfo describes a key for listing: never its hash, never the key.
type KeyInfo struct {
	TenantID  string
	ID        string
	Role      string
	AgentID   string
	Disabled  bool
	ExpiresAt time.Time
}

// State says whether the key is accepted at now: "active", "disabled",
// "expired" or "expires <time>".
func (k KeyInfo) State(now time.Time) string {
	switch {
	case k.Disabled:
		return "disabled"
	case k.ExpiresAt.IsZero():
		return "active"
	case !now.Before(k.ExpiresAt):
		return "expired"
	}
	return "expires " + k.ExpiresAt.UTC().Format(time.RFC3339)
}

// Errors of key edits, for callers that tell them apart.
var (
	ErrNoTenant = errors.New("no such tenant")
	ErrNoKey    = errors.New("no such key")
	ErrKeyID    = errors.New("key id already used")
)

// OpenKeyFile reads a tenants file for editing. The file must already be
// a valid tenants file.
func OpenKeyFile(path string) (*KeyFile, error) {
	// Edit the file a symbolic link points to, so that the link stays.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tenants file: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenants file: %w", err)
	}
	if err := Check(data); err != nil {
		return nil, fmt.Errorf("%s is not a valid tenants file (fix it first): %w", path, err)
	}
	f := &KeyFile{path: path, mode: st.Mode().Perm(), mtime: st.ModTime(), Now: time.Now}
	if err := yaml.Unmarshal(data, &f.doc); err != nil {
		return nil, fmt.Errorf("tenants file: %w", err)
	}
	if f.tenants() == nil {
		return nil, fmt.Errorf("%s has no tenants list", path)
	}
	return f, nil
}

// tenants returns the sequence node of the file's tenants.
func (f *KeyFile) tenants() *yaml.Node {
	if len(f.doc.Content) == 0 {
		return nil
	}
	if n := mapValue(f.doc.Content[0], "tenants"); n != nil && n.Kind == yaml.SequenceNode {
		return n
	}
	return nil
}

// mapValue returns the value of key in a mapping node, nil when absent.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// setMapValue sets key to a scalar in a mapping node, adding the key at the
// end when absent.
func setMapValue(m *yaml.Node, key, value, tag string) {
	if v := mapValue(m, key); v != nil {
		*v = yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value, LineComment: v.LineComment}
		return
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value})
}

// tenant returns the mapping node of a tenant.
func (f *KeyFile) tenant(id string) (*yaml.Node, error) {
	for _, t := range f.tenants().Content {
		if v := mapValue(t, "id"); v != nil && v.Value == id {
			return t, nil
		}
	}
	return nil, fmt.Errorf("%w %q in %s", ErrNoTenant, id, f.path)
}

// keys returns a tenant's api_keys sequence, creating it when create is set.
func keysOf(t *yaml.Node, create bool) *yaml.Node {
	ks := mapValue(t, "api_keys")
	if ks != nil && ks.Kind == yaml.SequenceNode {
		return ks
	}
	if !create {
		return nil
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	if ks != nil { // "api_keys:" with no value, or "[]"
		*ks = *seq
		return ks
	}
	t.Content = append(t.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "api_keys"}, seq)
	return seq
}

func (f *KeyFile) key(tenantID, keyID string) (*yaml.Node, error) {
	t, err := f.tenant(tenantID)
	if err != nil {
		return nil, err
	}
	for _, k := range keysOf(t, false).Content {
		if v := mapValue(k, "id"); v != nil && v.Value == keyID {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w %q for tenant %q", ErrNoKey, keyID, tenantID)
}

// List returns the keys of a tenant, or of every tenant when tenantID is
// empty, in file order.
func (f *KeyFile) List(tenantID string) ([]KeyInfo, error) {
	if tenantID != "" {
		if _, err := f.tenant(tenantID); err != nil {
			return nil, err
		}
	}
	var out []KeyInfo
	for _, t := range f.tenants().Content {
		tid := mapValue(t, "id")
		if tid == nil || tenantID != "" && tid.Value != tenantID {
			continue
		}
		ks := keysOf(t, false)
		if ks == nil {
			continue
		}
		for _, k := range ks.Content {
			var ak APIKey
			if err := k.Decode(&ak); err != nil {
				return nil, fmt.Errorf("tenant %q: %w", tid.Value, err)
			}
			out = append(out, KeyInfo{TenantID: tid.Value, ID: ak.ID, Role: ak.Role, AgentID: ak.AgentID, Disabled: ak.Disabled, ExpiresAt: ak.ExpiresAt})
		}
	}
	return out, nil
}

// NewKeySpec is what Create needs: the key's id (empty: one is made up),
// role and agent. The role and agent are checked by the same rules the
// services apply when they load the file.
type NewKeySpec struct {
	ID      string
	Role    string
	AgentID string
}

// Create adds a new key to a tenant and returns it — the only time it is
// ever shown: the file keeps only its hash.
func (f *KeyFile) Create(tenantID string, spec NewKeySpec) (id, key string, err error) {
	t, err := f.tenant(tenantID)
	if err != nil {
		return "", "", err
	}
	ks := keysOf(t, true)
	if spec.ID == "" {
		spec.ID = tenantID + "-" + randomSuffix()
	}
	if !namePattern.MatchString(spec.ID) {
		return "", "", fmt.Errorf("key id %q must match %s", spec.ID, namePattern)
	}
	for _, k := range ks.Content {
		if v := mapValue(k, "id"); v != nil && v.Value == spec.ID {
			return "", "", fmt.Errorf("%w: tenant %q already has a key %q", ErrKeyID, tenantID, spec.ID)
		}
	}
	key = NewKey()
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	setMapValue(m, "id", spec.ID, "!!str")
	setMapValue(m, "sha256", HashKey(key), "!!str")
	if spec.Role != "" {
		setMapValue(m, "role", spec.Role, "!!str")
	}
	if spec.AgentID != "" {
		setMapValue(m, "agent_id", spec.AgentID, "!!str")
	}
	m.HeadComment = "created " + f.Now().UTC().Format(time.RFC3339) + " by calmline keys"
	ks.Content = append(ks.Content, m)
	return spec.ID, key, nil
}

// Revoke disables a key: it stays in the file for the record and is
// refused from the next reload on.
func (f *KeyFile) Revoke(tenantID, keyID string) error {
	k, err := f.key(tenantID, keyID)
	if err != nil {
		return err
	}
	setMapValue(k, "disabled", "true", "!!bool")
	return nil
}

// Rotate creates a key with the old key's role and agent and retires the
// old one: disabled at once when keep is 0, else left working until
// now+keep (its expires_at), so that clients can switch without an outage.
func (f *KeyFile) Rotate(tenantID, keyID, newID string, keep time.Duration) (id, key string, err error) {
	old, err := f.key(tenantID, keyID)
	if err != nil {
		return "", "", err
	}
	if keep < 0 {
		return "", "", fmt.Errorf("keep %v must not be negative", keep)
	}
	var ak APIKey
	if err := old.Decode(&ak); err != nil {
		return "", "", err
	}
	if ak.Disabled {
		return "", "", fmt.Errorf("key %q of tenant %q is disabled: create a new key instead", keyID, tenantID)
	}
	id, key, err = f.Create(tenantID, NewKeySpec{ID: newID, Role: ak.Role, AgentID: ak.AgentID})
	if err != nil {
		return "", "", err
	}
	if keep == 0 {
		setMapValue(old, "disabled", "true", "!!bool")
	} else {
		until := f.Now().Add(keep).UTC().Truncate(time.Second)
		if !ak.ExpiresAt.IsZero() && ak.ExpiresAt.Before(until) {
			until = ak.ExpiresAt // never extend a key's life by rotating it
		}
		setMapValue(old, "expires_at", until.Format(time.RFC3339), "!!timestamp")
	}
	return id, key, nil
}

// Save checks the edited file as the services will read it and replaces
// the original atomically (a temporary file in the same directory, synced,
// then renamed over it), keeping its permissions. It refuses to overwrite
// a file that changed since it was opened.
func (f *KeyFile) Save() error {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&f.doc); err != nil {
		return fmt.Errorf("encode tenants file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode tenants file: %w", err)
	}
	if err := Check(b.Bytes()); err != nil {
		return fmt.Errorf("the edited file would not load, nothing written: %w", err)
	}
	if st, err := os.Stat(f.path); err != nil {
		return fmt.Errorf("tenants file: %w", err)
	} else if !st.ModTime().Equal(f.mtime) {
		return fmt.Errorf("%s changed while it was being edited; nothing written, run the command again", f.path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), "."+filepath.Base(f.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write tenants file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write tenants file: %w", err)
	}
	if err := tmp.Chmod(f.mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write tenants file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write tenants file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write tenants file: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("write tenants file: %w", err)
	}
	if st, err := os.Stat(f.path); err == nil {
		f.mtime = st.ModTime()
	}
	return nil
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
