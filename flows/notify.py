"""Telling people about flow runs: a readable run name, and a notification when a run fails.

The notification goes through a Prefect notification block (Slack, Teams, e-mail, or any webhook
with `CustomWebhookNotificationBlock`), named by the flow's `notify_block` parameter or, for every
run, the TEXTCLF_NOTIFY_BLOCK environment variable, as "<block-type-slug>/<block-name>":

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    CustomWebhookNotificationBlock(
        name="textclf", url="https://example.org/hooks/textclf",
        json_data={"text": "{{subject}}\\n{{body}}"},
    ).save("textclf-alerts")
    # then: TEXTCLF_NOTIFY_BLOCK=custom-webhook/textclf-alerts python -m flows.serve

A failed notification is logged, never raised: it must not hide the run's own outcome.
"""

from __future__ import annotations

import logging
import os

NOTIFY_ENV = "TEXTCLF_NOTIFY_BLOCK"

log = logging.getLogger("textclf.flows")


def pipeline_run_name() -> str:
    """`flow_run_name` of the pipeline flow: its target and overrides, e.g.
    `pipeline train -S train.lr=0.01` (Prefect keeps the run's id; the name is for people)."""
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    parts = ["pipeline", p.get("target") or "all"]
    if p.get("force"):
        parts.append("--force")
    parts += [f"-S {o}" for o in p.get("params") or []]
    return " ".join(parts)


def block_slug(parameters: dict | None) -> str | None:
    return (parameters or {}).get("notify_block") or os.environ.get(NOTIFY_ENV) or None


def failure_message(flow_name: str, flow_run, state) -> tuple[str, str]:
    """(subject, body) of the notification for a run that ended in `state`."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    subject = f"{flow_name}: run {flow_run.name} {state.name}"
    lines = [
        subject,
        f"message: {state.message or '-'}",
        f"parameters: {dict(flow_run.parameters or {})}",
        f"started: {flow_run.start_time}",
    ]
    if ui:
        lines.append(f"{ui.rstrip('/')}/runs/flow-run/{flow_run.id}")
    return subject, "\n".join(lines)


def notify_failure(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook: one notification through the configured block, if any."""
    slug = block_slug(flow_run.parameters)
    if not slug:
        return
    try:
        from prefect.blocks.core import Block

        subject, body = failure_message(flow.name, flow_run, state)
        block = Block.load(slug)
        with block.raise_on_failure() if hasattr(block, "raise_on_failure") else _nothing():
            block.notify(body, subject=subject)
    except Exception as err:  # noqa: BLE001 - see the module docstring
        log.warning("could not send the failure notification through %s: %s", slug, err)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
