package main

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// What calmline serve does, as the checks need it. These mirror the code on
// main: gateway.DefaultOptions (DrainTimeout 30 s, ShutdownGrace 10 s) and
// cmd/stack's 15 s stop bound for the other services.
const (
	defaultDrainTimeout  = 30 * time.Second
	gatewayShutdownGrace = 10 * time.Second
	backendStop          = 15 * time.Second
)

var services = []string{"gateway", "realtime", "fullcall", "escalation"}

// remotes says which backends a service needs the address of: required
// ones must be given (and must be dns:/// targets of headless Services, so
// that new streams spread over every pod), optional ones are checked when
// given.
var remotes = map[string]struct{ required, optional []string }{
	"gateway":  {required: []string{"realtime", "fullcall"}},
	"realtime": {optional: []string{"escalation"}},
	"fullcall": {optional: []string{"escalation"}},
}

// scaled are the services whose HPA must scale on live calls per pod.
var scaled = map[string]string{
	"gateway":  "calmline_gateway_calls_active",
	"realtime": "calmline_realtime_calls_active",
	"fullcall": "calmline_fullcall_calls_active",
}

// Options tunes Check.
type Options struct {
	// Flags, when not nil, are the flags `calmline serve` has; an argument
	// naming another is an error.
	Flags map[string]bool
}

// Check returns every broken invariant of the decoded objects, one message
// each, naming the object.
func Check(objs []*Object, o Options) []string {
	c := &checker{objs: objs, o: o}
	c.run()
	return c.problems
}

type checker struct {
	objs     []*Object
	o        Options
	problems []string
}

func (c *checker) errorf(obj *Object, format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("%s (%s): %s", obj.ID(), obj.Source, fmt.Sprintf(format, args...)))
}

func (c *checker) run() {
	namespaces := map[string]bool{}
	for _, o := range c.objs {
		if ns, ok := o.Value.(*corev1.Namespace); ok {
			namespaces[ns.Name] = true
		}
	}
	deployed := map[string]*Object{}
	for _, o := range c.objs {
		if _, ok := o.Value.(*corev1.Namespace); !ok && o.Meta.Namespace == "" {
			c.errorf(o, "no metadata.namespace: kubectl would put it in whatever namespace is current")
		}
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			if !namespaces[o.Meta.Namespace] {
				c.errorf(o, "namespace %q is not among the manifests", o.Meta.Namespace)
			}
			if svc := c.deployment(o, v); svc != "" {
				if prev, dup := deployed[svc]; dup {
					c.errorf(o, "runs %s, as %s does", svc, prev.ID())
				}
				deployed[svc] = o
			}
		case *corev1.Service:
			c.service(o, v)
		case *autoscalingv2.HorizontalPodAutoscaler:
			c.hpa(o, v)
		}
	}
	for _, svc := range services {
		if deployed[svc] == nil {
			c.problems = append(c.problems, fmt.Sprintf("no Deployment runs calmline serve --services=%s", svc))
		}
	}
	for svc, metric := range scaled {
		if d := deployed[svc]; d != nil {
			c.scaledOnCalls(d, metric)
		}
	}
	c.scraped(deployed)
}

// scraped checks the ServiceMonitors, when there are any: each service's
// pods are scraped on /metrics exactly once (every port exposes only its
// own service's series, so two Services selecting the same pods would
// count them twice), through a Service port that reaches the container's
// one port.
func (c *checker) scraped(deployed map[string]*Object) {
	var monitors []*Object
	for _, o := range c.objs {
		if _, ok := o.Value.(*monitoringv1.ServiceMonitor); ok {
			monitors = append(monitors, o)
		}
	}
	if len(monitors) == 0 {
		return
	}
	times := map[string]int{}
	for _, mo := range monitors {
		sm := mo.Value.(*monitoringv1.ServiceMonitor)
		if len(sm.Spec.Endpoints) == 0 {
			c.errorf(mo, "no endpoints")
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" {
				c.errorf(mo, "endpoint path %q; calmline serves /metrics", ep.Path)
			}
			if ep.Port == "" {
				c.errorf(mo, "an endpoint without a port name")
			}
		}
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			c.errorf(mo, "selector: %v", err)
			continue
		}
		ns := sm.Spec.NamespaceSelector.MatchNames
		for _, o := range c.objs {
			svc, ok := o.Value.(*corev1.Service)
			if !ok || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			if !sm.Spec.NamespaceSelector.Any && (len(ns) > 0 && !slices.Contains(ns, svc.Namespace) || len(ns) == 0 && svc.Namespace != sm.Namespace) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				for _, sp := range svc.Spec.Ports {
					if ep.Port == "" || sp.Name != ep.Port {
						continue
					}
					for name, d := range deployed {
						dep := d.Value.(*appsv1.Deployment)
						if selects(svc.Spec.Selector, dep.Spec.Template.Labels) && dep.Namespace == svc.Namespace {
							times[name]++
						}
					}
				}
			}
		}
	}
	for _, name := range services {
		switch n := times[name]; {
		case n == 0 && deployed[name] != nil:
			c.problems = append(c.problems, fmt.Sprintf("no ServiceMonitor endpoint scrapes the %s pods", name))
		case n > 1:
			c.problems = append(c.problems, fmt.Sprintf("the %s pods are scraped %d times by the ServiceMonitors (through several Services or ports); every series would count %d times", name, n, n))
		}
	}
}

// deployment checks one Deployment and returns the calmline service it runs.
func (c *checker) deployment(o *Object, d *appsv1.Deployment) string {
	spec := &d.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		c.errorf(o, "spec.selector is missing or invalid (%v)", err)
		return ""
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if !sel.Matches(podLabels) {
		c.errorf(o, "spec.selector %s does not match the pod template's labels %v", sel, podLabels)
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		c.errorf(o, "the pod must set securityContext.runAsNonRoot: true")
	}
	c.pdb(o, podLabels)
	if len(spec.Containers) != 1 {
		c.errorf(o, "%d containers; calmline runs one per pod", len(spec.Containers))
		return ""
	}
	ctr := &spec.Containers[0]
	c.container(o, spec, ctr)
	args, svc := c.args(o, ctr)
	if svc == "" {
		return ""
	}
	// Ports: the service listens on all interfaces, on a declared port.
	listen, ok := args[svc+"-addr"]
	if !ok {
		c.errorf(o, "no --%s-addr: calmline serve listens on 127.0.0.1 by default, unreachable from other pods", svc)
	} else if host, port, err := net.SplitHostPort(listen); err != nil || (host != "0.0.0.0" && host != "" && host != "::") {
		c.errorf(o, "--%s-addr=%s must listen on all interfaces (0.0.0.0:PORT)", svc, listen)
	} else if p, _ := strconv.Atoi(port); containerPort(ctr, intOrName{num: int32(p)}) == nil {
		c.errorf(o, "--%s-addr port %s is not a containerPort", svc, port)
	}
	for _, need := range remotes[svc].required {
		if _, ok := args[need]; !ok {
			c.errorf(o, "%s needs --%s", svc, need)
		}
	}
	for _, r := range append(slices.Clone(remotes[svc].required), remotes[svc].optional...) {
		if target, ok := args[r]; ok {
			c.target(o, r, target)
		}
	}
	// Termination: SIGKILL must not come before calmline has stopped.
	grace := time.Duration(30) * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	preStop := preStopDuration(ctr)
	need := preStop + backendStop
	what := fmt.Sprintf("preStop %v + stop %v", preStop, backendStop)
	if svc == "gateway" {
		drain := defaultDrainTimeout
		if v, ok := args["drain-timeout"]; ok {
			if drain, err = time.ParseDuration(v); err != nil {
				c.errorf(o, "--drain-timeout=%s: %v", v, err)
			}
		}
		need = preStop + drain + gatewayShutdownGrace
		what = fmt.Sprintf("preStop %v + --drain-timeout %v + shutdown grace %v", preStop, drain, gatewayShutdownGrace)
		if preStop == 0 {
			c.errorf(o, "the gateway needs a preStop delay, so the load balancer stops sending new calls before the drain refuses them")
		}
	}
	if grace < need {
		c.errorf(o, "terminationGracePeriodSeconds %v is shorter than %s = %v: calls would be killed, not drained", grace, what, need)
	}
	return svc
}

func (c *checker) container(o *Object, spec *corev1.PodSpec, ctr *corev1.Container) {
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"readinessProbe", "/readyz", ctr.ReadinessProbe}, {"livenessProbe", "/healthz", ctr.LivenessProbe}} {
		switch {
		case p.probe == nil:
			c.errorf(o, "container %s has no %s", ctr.Name, p.name)
		case p.probe.HTTPGet == nil:
			c.errorf(o, "container %s: %s must be an httpGet of %s", ctr.Name, p.name, p.path)
		case p.probe.HTTPGet.Path != p.path:
			c.errorf(o, "container %s: %s path %q; want %q", ctr.Name, p.name, p.probe.HTTPGet.Path, p.path)
		case containerPort(ctr, portRef(p.probe.HTTPGet.Port.String())) == nil:
			c.errorf(o, "container %s: %s port %s is not a containerPort", ctr.Name, p.name, p.probe.HTTPGet.Port.String())
		}
	}
	req := ctr.Resources.Requests
	if _, ok := req[corev1.ResourceCPU]; !ok {
		c.errorf(o, "container %s: no cpu request: the scheduler and the HPA's cpu target need one", ctr.Name)
	}
	if _, ok := req[corev1.ResourceMemory]; !ok {
		c.errorf(o, "container %s: no memory request", ctr.Name)
	}
	if _, ok := ctr.Resources.Limits[corev1.ResourceMemory]; !ok {
		c.errorf(o, "container %s: no memory limit", ctr.Name)
	}
	sc := ctr.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf(o, "container %s: securityContext.readOnlyRootFilesystem must be true", ctr.Name)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf(o, "container %s: securityContext.allowPrivilegeEscalation must be false", ctr.Name)
	}
	// What the pod refers to must exist among the manifests.
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			if _, ok := find[*corev1.ConfigMap](c.objs, o.Meta.Namespace, v.ConfigMap.Name); !ok {
				c.errorf(o, "volume %s: ConfigMap %s is not among the manifests", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if _, ok := find[*corev1.Secret](c.objs, o.Meta.Namespace, v.Secret.SecretName); !ok {
				c.errorf(o, "volume %s: Secret %s is not among the manifests", v.Name, v.Secret.SecretName)
			}
		}
	}
	for _, m := range ctr.VolumeMounts {
		if m.SubPath != "" && slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name && v.ConfigMap != nil }) {
			c.errorf(o, "volume mount %s uses subPath: a ConfigMap mounted with subPath is never updated, so tenants would not reload", m.Name)
		}
	}
	for _, e := range ctr.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		s, ok := find[*corev1.Secret](c.objs, o.Meta.Namespace, ref.Name)
		if !ok {
			c.errorf(o, "env %s: Secret %s is not among the manifests", e.Name, ref.Name)
			continue
		}
		if _, ok := s.StringData[ref.Key]; !ok {
			if _, ok := s.Data[ref.Key]; !ok {
				c.errorf(o, "env %s: Secret %s has no key %q", e.Name, ref.Name, ref.Key)
			}
		}
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// args checks the container's command line and returns its flags and the
// service it runs.
func (c *checker) args(o *Object, ctr *corev1.Container) (map[string]string, string) {
	if len(ctr.Args) == 0 || ctr.Args[0] != "serve" {
		c.errorf(o, "container %s: args must start with serve", ctr.Name)
		return nil, ""
	}
	args := map[string]string{}
	for _, a := range ctr.Args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			c.errorf(o, "argument %q: write flags as --name=value", a)
			continue
		}
		if c.o.Flags != nil && !c.o.Flags[name] {
			c.errorf(o, "--%s is not a flag of calmline serve", name)
		}
		if _, dup := args[name]; dup {
			c.errorf(o, "--%s given twice", name)
		}
		args[name] = value
		for _, m := range envRef.FindAllStringSubmatch(value, -1) {
			if !slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == m[1] }) {
				c.errorf(o, "--%s refers to $(%s), which the container's env does not define (Kubernetes would pass it literally)", name, m[1])
			}
		}
	}
	svc := args["services"]
	if !slices.Contains(services, svc) {
		c.errorf(o, "--services=%q: want exactly one of %v per Deployment", svc, services)
		return args, ""
	}
	return args, svc
}

// target checks a --realtime/--fullcall/--escalation address: a dns:///
// name of a headless Service in the cluster selecting the pods that run
// that service, on a port it exposes.
func (c *checker) target(o *Object, backend, target string) {
	hostport, ok := strings.CutPrefix(target, "dns:///")
	if !ok {
		c.errorf(o, "--%s=%s: use dns:///NAME.NAMESPACE.svc.cluster.local:PORT of a headless Service, so calls spread over every pod", backend, target)
		return
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		c.errorf(o, "--%s=%s: %v", backend, target, err)
		return
	}
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	if len(parts) < 3 || parts[2] != "svc" {
		c.errorf(o, "--%s=%s: want NAME.NAMESPACE.svc[.cluster.local]", backend, target)
		return
	}
	svc, ok := find[*corev1.Service](c.objs, parts[1], parts[0])
	if !ok {
		c.errorf(o, "--%s=%s: no Service %s/%s among the manifests", backend, target, parts[1], parts[0])
		return
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		c.errorf(o, "--%s=%s: Service %s is not headless (clusterIP: None): kube-proxy would pin each HTTP/2 connection, and with it every call, to one pod", backend, target, parts[0])
	}
	p, _ := strconv.Atoi(port)
	if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == p }) {
		c.errorf(o, "--%s=%s: Service %s has no port %d", backend, target, parts[0], p)
	}
	// The Service must select the pods that run the backend.
	for _, d := range ofType[*appsv1.Deployment](c.objs) {
		if d.Namespace != parts[1] || len(d.Spec.Template.Spec.Containers) != 1 || !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--services="+backend) {
			continue
		}
		if !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
			c.errorf(o, "--%s=%s: Service %s does not select the pods of Deployment %s", backend, target, parts[0], d.Name)
		}
		return
	}
	c.errorf(o, "--%s=%s: no Deployment in %s runs --services=%s", backend, target, parts[1], backend)
}

func (c *checker) service(o *Object, s *corev1.Service) {
	if len(s.Spec.Selector) == 0 {
		c.errorf(o, "no selector")
		return
	}
	var pods *appsv1.Deployment
	for _, d := range ofType[*appsv1.Deployment](c.objs) {
		if d.Namespace == s.Namespace && selects(s.Spec.Selector, d.Spec.Template.Labels) {
			pods = d
		}
	}
	if pods == nil {
		c.errorf(o, "selects no Deployment's pods")
		return
	}
	for _, p := range s.Spec.Ports {
		if containerPort(&pods.Spec.Template.Spec.Containers[0], portRef(p.TargetPort.String())) == nil {
			c.errorf(o, "port %s: targetPort %s is not a containerPort of %s", p.Name, p.TargetPort.String(), pods.Name)
		}
	}
	if slices.Contains(pods.Spec.Template.Spec.Containers[0].Args, "--services=gateway") && s.Spec.Type == corev1.ServiceTypeLoadBalancer {
		if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			c.errorf(o, "the gateway's LoadBalancer should use externalTrafficPolicy: Local (no second hop, the PBX's address kept)")
		}
	}
}

// pdb checks that a PodDisruptionBudget covers the pods.
func (c *checker) pdb(o *Object, pods labels.Set) {
	for _, p := range ofType[*policyv1.PodDisruptionBudget](c.objs) {
		if p.Namespace != o.Meta.Namespace {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(pods) {
			if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
				c.errorf(o, "PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", p.Name)
			}
			return
		}
	}
	c.errorf(o, "no PodDisruptionBudget selects its pods: a node drain could evict them all at once")
}

func (c *checker) hpa(o *Object, h *autoscalingv2.HorizontalPodAutoscaler) {
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
		c.errorf(o, "scaleTargetRef %s %s: want an apps/v1 Deployment", ref.APIVersion, ref.Kind)
		return
	}
	if _, ok := find[*appsv1.Deployment](c.objs, o.Meta.Namespace, ref.Name); !ok {
		c.errorf(o, "scaleTargetRef: no Deployment %s", ref.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
		c.errorf(o, "minReplicas must be at least 2: one pod is a single point of failure")
	}
}

// scaledOnCalls checks that an HPA scales d on its live calls per pod.
func (c *checker) scaledOnCalls(d *Object, metric string) {
	for _, h := range ofType[*autoscalingv2.HorizontalPodAutoscaler](c.objs) {
		if h.Namespace != d.Meta.Namespace || h.Spec.ScaleTargetRef.Name != d.Meta.Name {
			continue
		}
		for _, m := range h.Spec.Metrics {
			if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == metric {
				if m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue == nil || m.Pods.Target.AverageValue.Sign() <= 0 {
					c.errorf(d, "HorizontalPodAutoscaler %s: %s needs a positive AverageValue target (calls per pod)", h.Name, metric)
				}
				return
			}
		}
		c.errorf(d, "HorizontalPodAutoscaler %s does not scale on %s (live calls per pod)", h.Name, metric)
		return
	}
	c.errorf(d, "no HorizontalPodAutoscaler scales it on %s", metric)
}

func selects(selector map[string]string, podLabels map[string]string) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(podLabels))
}

type intOrName struct {
	num  int32
	name string
}

func portRef(s string) intOrName {
	if n, err := strconv.Atoi(s); err == nil {
		return intOrName{num: int32(n)}
	}
	return intOrName{name: s}
}

func containerPort(ctr *corev1.Container, p intOrName) *corev1.ContainerPort {
	for i := range ctr.Ports {
		cp := &ctr.Ports[i]
		if (p.name != "" && cp.Name == p.name) || (p.name == "" && cp.ContainerPort == p.num) {
			return cp
		}
	}
	return nil
}

func preStopDuration(ctr *corev1.Container) time.Duration {
	if ctr.Lifecycle == nil || ctr.Lifecycle.PreStop == nil {
		return 0
	}
	if s := ctr.Lifecycle.PreStop.Sleep; s != nil {
		return time.Duration(s.Seconds) * time.Second
	}
	if e := ctr.Lifecycle.PreStop.Exec; e != nil && len(e.Command) == 2 && e.Command[0] == "sleep" {
		if n, err := strconv.Atoi(e.Command[1]); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return 0
}
