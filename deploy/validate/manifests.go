package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// An Object is one decoded manifest document.
type Object struct {
	// Source is "FILE#N", N counting documents from 1.
	Source string
	Kind   string
	Meta   *metav1.ObjectMeta
	// Value is the typed object: *appsv1.Deployment, *corev1.Service, ...
	Value any
}

// ID names the object in messages: "Deployment calmline/gateway".
func (o *Object) ID() string {
	if o.Meta.Namespace == "" {
		return o.Kind + " " + o.Meta.Name
	}
	return o.Kind + " " + o.Meta.Namespace + "/" + o.Meta.Name
}

// kinds maps "apiVersion kind" to a constructor of the official Go type.
// Anything else is refused: a manifest of an unknown kind is not checked,
// so it must not pass silently.
var kinds = map[string]func() (any, *metav1.ObjectMeta){
	"v1 Namespace": func() (any, *metav1.ObjectMeta) { o := &corev1.Namespace{}; return o, &o.ObjectMeta },
	"v1 ServiceAccount": func() (any, *metav1.ObjectMeta) {
		o := &corev1.ServiceAccount{}
		return o, &o.ObjectMeta
	},
	"v1 ConfigMap": func() (any, *metav1.ObjectMeta) { o := &corev1.ConfigMap{}; return o, &o.ObjectMeta },
	"v1 Secret":    func() (any, *metav1.ObjectMeta) { o := &corev1.Secret{}; return o, &o.ObjectMeta },
	"v1 Service":   func() (any, *metav1.ObjectMeta) { o := &corev1.Service{}; return o, &o.ObjectMeta },
	"apps/v1 Deployment": func() (any, *metav1.ObjectMeta) {
		o := &appsv1.Deployment{}
		return o, &o.ObjectMeta
	},
	"policy/v1 PodDisruptionBudget": func() (any, *metav1.ObjectMeta) {
		o := &policyv1.PodDisruptionBudget{}
		return o, &o.ObjectMeta
	},
	"autoscaling/v2 HorizontalPodAutoscaler": func() (any, *metav1.ObjectMeta) {
		o := &autoscalingv2.HorizontalPodAutoscaler{}
		return o, &o.ObjectMeta
	},
	"monitoring.coreos.com/v1 ServiceMonitor": func() (any, *metav1.ObjectMeta) {
		o := &monitoringv1.ServiceMonitor{}
		return o, &o.ObjectMeta
	},
	"networking.k8s.io/v1 NetworkPolicy": func() (any, *metav1.ObjectMeta) {
		o := &networkingv1.NetworkPolicy{}
		return o, &o.ObjectMeta
	},
}

// LoadDir decodes every *.yaml file of dir, in name order.
func LoadDir(dir string) ([]*Object, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no *.yaml files", dir)
	}
	sort.Strings(files)
	var objs []*Object
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		o, err := Decode(filepath.Base(f), b)
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return objs, errors.Join(errs...)
}

// Decode splits a YAML stream into documents and decodes each strictly
// into its official Kubernetes type: an unknown or duplicated field, a
// value of the wrong type or an unparsable quantity is an error.
func Decode(name string, data []byte) ([]*Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*Object
	var errs []error
	for n := 1; ; n++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return objs, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			n--
			continue
		}
		src := fmt.Sprintf("%s#%d", name, n)
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		mk, ok := kinds[tm.APIVersion+" "+tm.Kind]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: apiVersion %q kind %q is not one this validator knows", src, tm.APIVersion, tm.Kind))
			continue
		}
		v, meta := mk()
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", src, tm.Kind, err))
			continue
		}
		if meta.Name == "" {
			errs = append(errs, fmt.Errorf("%s: %s without metadata.name", src, tm.Kind))
			continue
		}
		objs = append(objs, &Object{Source: src, Kind: tm.Kind, Meta: meta, Value: v})
	}
	return objs, errors.Join(errs...)
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// ofType returns the objects of type T.
func ofType[T any](objs []*Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func find[T any](objs []*Object, ns, name string) (T, bool) {
	var zero T
	for _, o := range objs {
		if v, ok := o.Value.(T); ok && o.Meta.Namespace == ns && o.Meta.Name == name {
			return v, true
		}
	}
	return zero, false
}

// serveFlags parses the flag names out of `calmline serve -h`.
func serveFlags(help string) map[string]bool {
	flags := map[string]bool{}
	for line := range strings.Lines(help) {
		if !strings.HasPrefix(line, "  -") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
		flags[strings.TrimSpace(name)] = true
	}
	return flags
}
