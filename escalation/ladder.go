package escalation

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/calmline/calmline/lib/telemetry"
	"github.com/calmline/calmline/lib/tenant"
)

// stepRow is a ladder step of one escalation, as stored.
type stepRow struct {
	EscalationID string
	Idx          int
	Name         string
	Action       string
	Endpoint     string
	SkipIf       []string
	DueAt        int64
	State        int
	DeliveryID   string
}

func joinList(l []string) string { return strings.Join(l, ",") }

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// advance moves an escalation's waiting steps on: a step is skipped as
// soon as a lasting condition rules it out (the escalation was resolved,
// or acknowledged and the step skips then, or the call ended and the step
// acts on the call); otherwise, once due, it is skipped if the episode has
// cleared and the step skips then, and started if not. Steps run in index
// order, each on its own: a later step does not wait for an earlier one's
// delivery.
func (t *txn) advance(e *escRow) error {
	rows, err := t.rows(`SELECT idx, name, action, endpoint, skip_if, due_at FROM escalation_steps
WHERE escalation_id = ? AND state = ? ORDER BY idx`, e.ID, stepPending)
	if err != nil {
		return fmt.Errorf("read steps: %w", err)
	}
	var steps []stepRow
	for rows.Next() {
		st := stepRow{EscalationID: e.ID, State: stepPending}
		var skip string
		if err := rows.Scan(&st.Idx, &st.Name, &st.Action, &st.Endpoint, &skip, &st.DueAt); err != nil {
			rows.Close()
			return fmt.Errorf("read steps: %w", err)
		}
		st.SkipIf = splitList(skip)
		steps = append(steps, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	now := t.nowMs()
	for _, st := range steps {
		reason := ""
		switch {
		case e.State == escResolved:
			reason = "resolved"
		case e.State == escAcked && slices.Contains(st.SkipIf, tenant.SkipIfAcknowledged):
			reason = "acknowledged"
		case e.CallEnded && st.Action != tenant.ActionNotify:
			reason = "call ended"
		case st.DueAt > now:
			continue
		case e.Cleared && slices.Contains(st.SkipIf, tenant.SkipIfCleared):
			reason = "cleared"
		}
		if reason != "" {
			if err := t.skipStep(e, st, reason); err != nil {
				return err
			}
			continue
		}
		if err := t.startStep(e, st); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) skipStep(e *escRow, st stepRow, reason string) error {
	if _, err := t.exec(`UPDATE escalation_steps SET state = ?, done_at = ?, detail = ? WHERE escalation_id = ? AND idx = ?`,
		stepSkipped, t.nowMs(), reason, e.ID, st.Idx); err != nil {
		return fmt.Errorf("skip step: %w", err)
	}
	_, err := t.audit(auditEntry{TenantID: e.TenantID, Kind: "step.skipped", EscalationID: e.ID, CallID: e.CallID,
		Detail: map[string]any{"step": st.Name, "action": st.Action, "reason": reason}})
	return err
}

// startStep puts the step's request in the outbox.
func (t *txn) startStep(e *escRow, st stepRow) error {
	did := deliveryID("step", e.TenantID, e.ID, strconv.Itoa(st.Idx))
	ref, err := t.audit(auditEntry{TenantID: e.TenantID, Kind: "step.started", EscalationID: e.ID, CallID: e.CallID,
		Detail: map[string]any{"step": st.Name, "action": st.Action, "endpoint": st.Endpoint, "delivery_id": did}})
	if err != nil {
		return err
	}
	var params map[string]string
	if ep, ok := t.st.tenant(e.TenantID).Escalation.Endpoint(st.Endpoint); ok {
		params = ep.Params
	}
	body, typ := stepPayload(e, st, params, ref, t.now)
	// The step is a span of the call's trace, under the request that
	// opened the escalation; its delivery's attempts are its children.
	// It ends as the step starts (once the transaction commits): the
	// attempts measure the rest.
	_, span := t.st.trace.tracer.Start(t.st.trace.extract(t.ctx, e.TraceContext), spanStep, trace.WithTimestamp(t.now),
		trace.WithAttributes(attribute.String(telemetry.CallIDKey, e.CallID), attribute.String(attrEscalationID, e.ID),
			attribute.String(attrStep, st.Name), attribute.String(attrAction, st.Action), attribute.String(attrEndpoint, st.Endpoint),
			attribute.String(attrDeliveryID, did), attribute.String(attrEventType, typ)))
	stepCtx := t.st.trace.inject(trace.ContextWithSpan(t.st.trace.extract(t.ctx, e.TraceContext), span))
	t.spans = append(t.spans, span)
	if err := t.enqueue(delivery{ID: did, TenantID: e.TenantID, EscalationID: e.ID, CallID: e.CallID, AgentID: e.AgentID,
		Endpoint: st.Endpoint, OrderKey: orderKey(e.TenantID, "call", e.CallID, st.Endpoint), EventType: typ,
		StepIdx: st.Idx, StepName: st.Name, Payload: body, TraceContext: stepCtx}); err != nil {
		return err
	}
	if _, err := t.exec(`UPDATE escalation_steps SET state = ?, delivery_id = ? WHERE escalation_id = ? AND idx = ?`,
		stepDelivering, did, e.ID, st.Idx); err != nil {
		return fmt.Errorf("start step: %w", err)
	}
	return nil
}

// stepDone records the outcome of a step's delivery; a transfer's outcome
// is also an event for the subscribed endpoints.
func (t *txn) stepDone(d *delivery, ok bool, lastErr string) error {
	state, kind := stepSucceeded, "step.succeeded"
	if !ok {
		state, kind = stepFailed, "step.failed"
	}
	var action string
	if err := t.row(`SELECT action FROM escalation_steps WHERE escalation_id = ? AND idx = ?`, d.EscalationID, d.StepIdx).Scan(&action); err != nil {
		return fmt.Errorf("read step: %w", err)
	}
	if _, err := t.exec(`UPDATE escalation_steps SET state = ?, done_at = ? WHERE escalation_id = ? AND idx = ?`,
		state, t.nowMs(), d.EscalationID, d.StepIdx); err != nil {
		return fmt.Errorf("finish step: %w", err)
	}
	detail := map[string]any{"step": d.StepName, "action": action, "delivery_id": d.ID, "attempts": d.Attempts}
	if !ok {
		detail["last_error"] = lastErr
	}
	ref, err := t.audit(auditEntry{TenantID: d.TenantID, Kind: kind, EscalationID: d.EscalationID, CallID: d.CallID, Detail: detail})
	if err != nil {
		return err
	}
	if action != tenant.ActionTransfer {
		return nil
	}
	e, err := t.getEsc(d.TenantID, d.EscalationID)
	if err != nil {
		return err
	}
	ev := tenant.EventEscalationTransferSucceeded
	if !ok {
		ev = tenant.EventEscalationTransferFailed
	}
	return t.emitEscalationEvent(e, ev, ref, eventExtra{Delivery: &deliveryInfo{ID: d.ID, Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: lastErr}})
}

// callEnded marks a call's escalations: steps that act on the call (warn
// the caller, transfer) are skipped from now on.
func (t *txn) callEnded(tenantID, callID string) error {
	if _, err := t.exec(`UPDATE escalations SET call_ended = 1 WHERE tenant_id = ? AND call_id = ?`, tenantID, callID); err != nil {
		return fmt.Errorf("mark call ended: %w", err)
	}
	rows, err := t.rows(`SELECT `+escColumns+` FROM escalations WHERE tenant_id = ? AND call_id = ? AND state <> ?`, tenantID, callID, escResolved)
	if err != nil {
		return fmt.Errorf("read escalations: %w", err)
	}
	var es []*escRow
	for rows.Next() {
		e, err := scanEsc(rows)
		if err != nil {
			rows.Close()
			return err
		}
		es = append(es, e)
	}
	rows.Close()
	for _, e := range es {
		if err := t.advance(e); err != nil {
			return err
		}
	}
	return rows.Err()
}
