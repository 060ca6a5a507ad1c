"""One audited record as escaped HTML: roles, the flagged span in <mark>, trimmed turns marked.

Every piece of record text goes through ``html.escape``; the only markup is what this module
writes around it, so a conversation full of HTML, Markdown or scripts shows as the text it is.
"""
from __future__ import annotations

import html

from curatune.curate.audit import AuditItem, Label, excerpt, span_message

#: Messages longer than this get a scrolling box, so one huge turn does not push the buttons away.
LONG_MESSAGE = 2500


def message_body(content: str, span: str) -> str:
    if not content.strip():
        what = f"(empty: {len(content)} whitespace characters)" if content else "(empty)"
        return f'<span class="ct-muted">{what}</span>'
    parts = excerpt(content, span)
    return "".join(f"<mark>{html.escape(piece)}</mark>" if kind == "span" else html.escape(piece)
                   for piece, kind in parts)


def messages_html(item: AuditItem) -> str:
    """The conversation, one box per message; trimmed-off messages dashed and faded."""
    if not item.messages:
        return ('<div class="ct-msg"><div class="ct-role">no messages: the loader rejected this raw row</div>'
                f'<div class="ct-diff">{message_body(item.meta, "")}</div></div>')
    marked = span_message(item)
    blocks = []
    for index, message in enumerate(item.messages):
        role = message["role"]
        cut = item.cut(index)
        flag = ""
        if cut:
            flag = '<span class="ct-flag">✂ cut from here by the trim</span>' if index == item.turn else '<span class="ct-flag">✂ cut</span>'
        if item.flagged(index):
            flag += '<span class="ct-flag">⚑ flagged</span>'
        long = " ct-long" if len(message["content"]) > LONG_MESSAGE else ""
        role_class = "assistant" if role == "assistant" else "other"
        blocks.append(
            f'<div class="ct-msg{" ct-cut" if cut else ""}">'
            f'<div class="ct-role {role_class}">{html.escape(role)} · message {index}{flag}</div>'
            f'<div class="ct-diff{long}">{message_body(message["content"], item.span if index == marked else "")}</div>'
            "</div>"
        )
    return "".join(blocks)


def meta_html(item: AuditItem, label: Label | None) -> str:
    """Reason, action, step, detail, ids and the current label, escaped."""
    e = html.escape
    lines = [f"<b>{e(item.reason)}</b> · {e(item.action)}" + (f" · step {e(item.step)}" if item.step else "")
             + f' · <span class="ct-muted">id {e(item.id)} · sample #{item.rank}</span>']
    if item.source or item.category:
        lines.append(f'<span class="ct-muted">source {e(item.source or "—")} · category {e(item.category or "—")}</span>')
    if item.detail:
        lines.append(f"detail: {e(item.detail)}")
    if item.action == "trim" and item.turn >= 0:
        kept = f"; the first {item.turn} kept as record {e(item.kept_as)}" if item.kept_as else ""
        lines.append(f"trimmed: messages {item.turn}–{len(item.messages) - 1} cut{kept}")
    if item.duplicate_of:
        lines.append(f"duplicate of {e(item.duplicate_of)}")
    if item.span and span_message(item) is None:
        lines.append(f"the flagged text was not found in the conversation: <mark>{e(item.span[:200])}</mark>")
    if label is not None:
        note = f" ({e(label.note)})" if label.note else ""
        lines.append(f"<b>labelled {e(label.verdict)}</b>{note} at {e(label.labelled_at)}")
    else:
        lines.append('<span class="ct-muted">not labelled yet</span>')
    return '<div class="ct-meta">' + "<br>".join(lines) + "</div>"
