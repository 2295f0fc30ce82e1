// The "Outgoing mail" card: the portal's newest messages, filtered, cancelled and retried, kept fresh.

import { API, api, errorMessage, unreachable } from "./api.js";
import { $, addressText } from "./dom.js";
import { dateFormat } from "./format.js";

import { announce, currentView, handledAuthProblem, setNotice } from "./views.js";


const MESSAGES = `${API}/smtpsettings/messages`;
const OUTBOX_PAGE = 20;
// While mail is on its way the list refreshes itself: every few seconds while a message is queued or being
// sent; while only deferred ones wait, shortly after the earliest next attempt, but at least every half minute.
const OUTBOX_ACTIVE_MS = 3000;
const OUTBOX_WAITING_MS = 30000;
const STATUS_LABELS = {
  queued: "Queued",
  sending: "Sending",
  sent: "Sent",
  partial: "Sent in part",
  deferred: "Deferred",
  failed: "Failed",
  cancelled: "Cancelled",
};
// Recipients of a message delivered in part that did not get it (yet), as their lines begin.
const RECIPIENT_LABELS = { refused: "Refused", failed: "Not delivered to", deferred: "Waiting for" };
const CANCELLABLE = ["queued", "deferred"];
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
// In the table, a creation time without the year while it is this year's: "Nov 29, 10:26 PM".
const shortFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
const shortDate = (date) => (date.getFullYear() === new Date().getFullYear() ? shortFormat : dateFormat).format(date);

let outboxTimer = null;
let outboxSeq = 0; // answers to list requests that were overtaken (a newer list, an action) are dropped
let outboxMessages = []; // the messages shown, as the server last described them
let outboxTotal = 0;
let outboxFilter = ""; // the status filter the shown list was loaded with
let outboxLoadFailed = false; // the alert holds a failed load (cleared by the next good one), not an action's error
const outboxBusy = new Set(); // ids whose cancel or retry is in flight

export function stopOutboxRefresh() {
  if (outboxTimer !== null) clearTimeout(outboxTimer);
  outboxTimer = null;
}

/** Refresh again later if a shown message may still change on its own; not at all otherwise. */
function scheduleOutboxRefresh() {
  stopOutboxRefresh();
  if (currentView !== "settings") return;
  let delay = null;
  for (const m of outboxMessages) {
    if (m.status === "queued" || m.status === "sending") {
      delay = OUTBOX_ACTIVE_MS;
      break;
    }
    if (m.status === "deferred") {
      const due = Date.parse(m.nextAttemptAt || "") - Date.now() + 1000;
      const wait = Number.isFinite(due) ? Math.min(Math.max(due, OUTBOX_ACTIVE_MS), OUTBOX_WAITING_MS) : OUTBOX_WAITING_MS;
      delay = delay === null ? wait : Math.min(delay, wait);
    }
  }
  if (delay === null) return;
  outboxTimer = setTimeout(() => {
    outboxTimer = null;
    // A tab in the background asks nothing; it catches up when it is looked at again.
    if (document.hidden) scheduleOutboxRefresh();
    else loadOutbox();
  }, delay);
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export async function loadOutbox() {
  stopOutboxRefresh();
  const seq = ++outboxSeq;
  const filter = $("outbox-status").value;
  const query = new URLSearchParams({ count: String(OUTBOX_PAGE) });
  if (filter) query.set("status", filter);
  const res = await api("GET", `${MESSAGES}?${query}`);
  if (seq !== outboxSeq || currentView !== "settings") return;
  if (handledAuthProblem(res)) return;
  if (res.status !== 200 || !res.body || !Array.isArray(res.body.response)) {
    outboxLoadFailed = true;
    const text = res.status === 0 ? unreachable : errorMessage(res, `The messages could not be loaded (HTTP ${res.status}).`);
    setNotice($("outbox-alert"), text);
    if (!outboxMessages.length) $("outbox-summary").textContent = "";
    scheduleOutboxRefresh();
    return;
  }
  if (outboxLoadFailed) setNotice($("outbox-alert"), "");
  outboxLoadFailed = false;
  outboxMessages = res.body.response.filter((m) => m && typeof m.id === "string");
  outboxTotal = Number.isInteger(res.body.total) ? res.body.total : outboxMessages.length;
  outboxFilter = filter;
  renderOutbox();
  scheduleOutboxRefresh();
}

/** The list as it stands; keyboard focus on a row's button (or the row) survives the rebuild. */
function renderOutbox() {
  const tbody = $("outbox-rows");
  const active = document.activeElement;
  const focusedRow = active && tbody.contains(active) ? active.closest("tr") : null;
  const focus = focusedRow ? { id: focusedRow.dataset.id, action: active.dataset.action || "" } : null;

  tbody.replaceChildren(...outboxMessages.map(messageRow));
  const shown = outboxMessages.length;
  const what = outboxFilter ? `${outboxFilter} message` : "message";
  $("outbox-summary").textContent = outboxTotal === 0
    ? `No ${what}s${outboxFilter ? "" : " yet"}.`
    : `${shown} of ${plural(outboxTotal, what)}`;
  $("outbox-table").hidden = shown === 0;

  if (focus) {
    const row = [...tbody.rows].find((r) => r.dataset.id === focus.id);
    const button = row && [...row.querySelectorAll("button[data-action]")].find((b) => b.dataset.action === focus.action);
    if (button) button.focus();
    else if (row) row.focus();
    else $("outbox-refresh").focus();
  }
}

/** One message as a table row. Subjects, addresses and server replies come from outside: text only. */
function messageRow(m) {
  const tr = document.createElement("tr");
  tr.dataset.id = m.id;
  tr.dataset.status = m.status;
  tr.tabIndex = -1;
  // Each value sits in a box of its own, so that on a phone it can stand beside its column's name.
  const cell = (label, className) => {
    const td = document.createElement("td");
    td.dataset.label = label;
    if (className) td.className = className;
    const box = document.createElement("div");
    td.append(box);
    tr.append(td);
    return box;
  };

  const created = cell("Created", "outbox__created");
  const when = document.createElement("time");
  when.dateTime = m.createdAt || "";
  const date = new Date(m.createdAt);
  if (Number.isNaN(date.getTime())) when.textContent = m.createdAt || "";
  else {
    when.textContent = shortDate(date);
    when.title = dateFormat.format(date);
  }
  created.append(when);

  const toCell = cell("To", "outbox__to");
  const to = Array.isArray(m.to) ? m.to : [];
  const cc = Array.isArray(m.cc) ? m.cc : [];
  const everyone = [...to, ...cc];
  toCell.append(addressText(everyone[0] || ""));
  if (everyone.length > 1) {
    const more = document.createElement("span");
    more.className = "outbox__more";
    more.textContent = `+${everyone.length - 1}`;
    more.title = [to.length ? `To: ${to.join(", ")}` : "", cc.length ? `Cc: ${cc.join(", ")}` : ""].filter(Boolean).join("\n");
    toCell.append(" ", more);
  }

  const subject = cell("Subject", "outbox__subject");
  subject.id = `outbox-subject-${m.id}`;
  if (m.subject) subject.textContent = m.subject;
  else {
    subject.textContent = "(no subject)";
    subject.classList.add("muted");
  }

  const statusCell = cell("Status");
  const badge = document.createElement("span");
  const known = Object.hasOwn(STATUS_LABELS, m.status);
  badge.className = "badge status-badge";
  badge.dataset.status = known ? m.status : "unknown";
  badge.textContent = known ? STATUS_LABELS[m.status] : String(m.status || "unknown");
  statusCell.append(badge);
  const attempts = document.createElement("p");
  attempts.className = "outbox__attempts";
  attempts.textContent = plural(Number(m.attempts) || 0, "attempt");
  statusCell.append(attempts);

  const result = cell("Result", "outbox__result");
  const line = (text, className) => {
    const p = document.createElement("p");
    p.className = className;
    p.textContent = text;
    result.append(p);
    return p;
  };
  // Once queued again (a retry) or on its way, an earlier attempt's error no longer describes the message.
  const pending = m.status === "queued" || m.status === "sending";
  const error = !pending && typeof m.lastError === "string" ? m.lastError : "";
  const reply = !pending && typeof m.smtpReply === "string" ? m.smtpReply : "";
  if (error) line(error, m.status === "sent" ? "outbox__reply" : "outbox__error");
  // The server's reply, unless the error sentence already quotes it.
  if (reply && !error.includes(reply)) line(reply, "outbox__reply");
  // Delivered to some: name the others, each with the reply that kept it from them (To and Cc only:
  // the API never lists Bcc).
  const recipients = (Array.isArray(m.recipients) ? m.recipients : []).filter((r) => r && typeof r.address === "string");
  if (recipients.some((r) => r.status === "accepted")) {
    for (const r of recipients) {
      if (!Object.hasOwn(RECIPIENT_LABELS, r.status)) continue;
      const told = `${RECIPIENT_LABELS[r.status]} ${r.address}`;
      const text = typeof r.reply === "string" && r.reply ? `${told}: ${r.reply}` : told;
      line(text, "outbox__recipient").dataset.status = r.status;
    }
  }
  if (m.status === "deferred" && m.nextAttemptAt) {
    const next = new Date(m.nextAttemptAt);
    if (!Number.isNaN(next.getTime())) {
      const sameDay = next.toDateString() === new Date().toDateString();
      line(`Next attempt ${sameDay ? `at ${timeFormat.format(next)}` : dateFormat.format(next)}`, "outbox__next");
    }
  }
  if (m.status === "sent" && m.sentAt && !reply) {
    const sent = new Date(m.sentAt);
    if (!Number.isNaN(sent.getTime())) line(`Sent ${dateFormat.format(sent)}`, "outbox__reply");
  }

  const actions = document.createElement("td");
  actions.className = "outbox__actions";
  tr.append(actions);
  const busy = outboxBusy.has(m.id);
  const button = (action, text) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn--secondary btn--small";
    b.dataset.action = action;
    b.textContent = text;
    // aria-disabled rather than disabled: a disabled button drops the keyboard focus.
    if (busy) b.setAttribute("aria-disabled", "true");
    b.setAttribute("aria-describedby", subject.id);
    actions.append(b);
  };
  if (CANCELLABLE.includes(m.status)) button("cancel", busy ? "Cancelling…" : "Cancel");
  if (m.status === "failed") button("retry", busy ? "Retrying…" : "Retry");
  return tr;
}

/** Show one message as it is now, in its place. */
function replaceMessage(message) {
  outboxMessages = outboxMessages.map((m) => (m.id === message.id ? message : m));
}

export async function onOutboxAction(id, action) {
  if (!id || outboxBusy.has(id) || !["cancel", "retry"].includes(action)) return;
  stopOutboxRefresh();
  outboxSeq++; // a list on its way may predate the action: its answer is dropped
  outboxBusy.add(id);
  setNotice($("outbox-alert"), "");
  outboxLoadFailed = false;
  renderOutbox();
  const path = `${MESSAGES}/${encodeURIComponent(id)}`;
  const res = action === "cancel" ? await api("DELETE", path) : await api("POST", `${path}/retry`);
  outboxSeq++;
  outboxBusy.delete(id);
  if (handledAuthProblem(res)) return;
  if (res.status === 200 && res.body && res.body.response && res.body.response.id === id) {
    replaceMessage(res.body.response);
    announce(action === "cancel" ? "The message was cancelled." : "The message was queued to be sent again.");
  } else {
    const verb = action === "cancel" ? "cancelled" : "sent again";
    const text = res.status === 0 ? unreachable : errorMessage(res, `The message could not be ${verb} (HTTP ${res.status}).`);
    setNotice($("outbox-alert"), text);
    // Usually the message moved on meanwhile (sent, cancelled elsewhere): show it as it is now.
    const now = await api("GET", path);
    if (now.status === 200 && now.body && now.body.response && now.body.response.id === id) replaceMessage(now.body.response);
  }
  if (currentView !== "settings") return;
  renderOutbox();
  scheduleOutboxRefresh();
}
