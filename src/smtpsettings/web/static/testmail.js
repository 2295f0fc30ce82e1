// The test mail: start it (optionally to another address), follow its progress, show its diagnostics.

import { SESSION_KEY, SMTP, api, describeWait, errorMessage, retryAfter, unreachable } from "./api.js";
import { $ } from "./dom.js";
import { dateFormat } from "./format.js";
import { clearFormMessages, refresh } from "./settings.js";
import { announce, currentView, handledAuthProblem, setNotice } from "./views.js";

const POLL_MS = 1000;


let pollTimer = null;
export let testStarting = false; // the start request is in flight
export let testRunning = false; // a job we follow has not completed
let watching = false; // we saw this job running (or started it): announce its end

export function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

export const wasSignedIn = () => sessionStorage.getItem(SESSION_KEY) !== null;

export function hideTestPanel() {
  stopPolling();
  testRunning = false;
  watching = false;
  $("test-panel").hidden = true;
}

export async function onTestClick() {
  clearFormMessages();
  const recipient = $("test-to");
  const to = recipient.value.trim();
  // A plain shape check; the server applies the full rules (international domains included).
  if (to && !/^[^\s@<>]+@[^\s@<>]+$/.test(to)) {
    setTestToError("Enter a valid email address, like ann@example.com, or leave the field empty.");
    recipient.focus();
    return;
  }
  setTestToError("");
  testStarting = true;
  refresh();
  const res = await api("GET", to ? `${SMTP}/test?${new URLSearchParams({ to })}` : `${SMTP}/test`);
  testStarting = false;
  if (handledAuthProblem(res)) return;
  if (res.status === 200 && res.body && res.body.response) {
    renderTest(res.body.response, { fresh: true });
    return;
  }
  refresh();
  const errors = res.status === 400 && res.body && res.body.response && res.body.response.errors;
  if (errors && Array.isArray(errors.to)) {
    setTestToError(errors.to.join(" "));
    recipient.focus();
    return;
  }
  let text;
  if (res.status === 429) {
    text = `${errorMessage(res, "Too many test messages.")} You can send the next one in ${describeWait(retryAfter(res))}.`;
  } else if (res.status === 0) text = unreachable;
  else text = errorMessage(res, `The test could not be started (HTTP ${res.status}).`);
  setNotice($("form-alert"), text);
}

export function setTestToError(text) {
  const input = $("test-to");
  $("test-to-error").textContent = text;
  if (text) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
/** "5 minutes ago", "yesterday": how long ago, in the largest unit that fits. */
function ago(date) {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [unit, size] of units) if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  return "just now";
}

/** On page load: follow a test that is still running, or show the last result. */
export async function resumeTest() {
  const res = await api("GET", `${SMTP}/test/status`);
  if (res.status !== 200 || !res.body || !res.body.response) return;
  renderTest(res.body.response, { fresh: false });
}

async function poll() {
  pollTimer = null;
  const res = await api("GET", `${SMTP}/test/status`);
  if (currentView !== "settings") return;
  if (handledAuthProblem(res)) return;
  if (res.status === 200 && res.body && res.body.response) {
    renderTest(res.body.response, { fresh: false });
  } else {
    // A transient failure: try again on the next tick.
    schedulePoll();
  }
}

function schedulePoll() {
  stopPolling();
  pollTimer = setTimeout(poll, POLL_MS);
  refresh();
}

function renderTest(job, { fresh }) {
  const panel = $("test-panel");
  const progress = $("test-progress");
  const percents = Math.max(0, Math.min(100, Number(job.percents) || 0));
  panel.hidden = false;
  if (fresh || !job.completed) watching = true;
  $("test-title").textContent = watching ? "Test mail" : "Last test mail";
  const started = new Date(job.startedAt);
  const when = $("test-when");
  when.hidden = Number.isNaN(started.getTime());
  if (!when.hidden) {
    when.dateTime = job.startedAt;
    when.textContent = `${dateFormat.format(started)} (${ago(started)})`;
  }
  testRunning = !job.completed;
  progress.value = percents;
  progress.setAttribute("aria-valuenow", String(percents));
  progress.setAttribute("aria-valuetext", `${percents}% – ${job.status || "working"}`);
  $("test-percent").textContent = `${percents}%`;

  const result = $("test-result");
  const details = $("test-details");
  if (!job.completed) {
    $("test-step").textContent = `${job.status || "Working"}…`;
    panel.classList.remove("is-success", "is-error");
    panel.classList.add("is-running");
    result.hidden = true;
    details.hidden = true;
    schedulePoll();
    return;
  }
  stopPolling();
  panel.classList.remove("is-running");
  const ok = !job.error;
  panel.classList.toggle("is-success", ok);
  panel.classList.toggle("is-error", !ok);
  $("test-step").textContent = ok ? "Completed" : `Stopped at: ${job.status || "unknown step"}`;
  // The server says where the mail went, also after a reload; a test from before it did names nobody.
  const who = typeof job.recipient === "string" ? job.recipient : "";
  if (ok) {
    result.dataset.kind = "success";
    result.textContent = `The test mail was sent${who ? ` to ${who}` : ""}. Check the inbox.`;
  } else {
    result.dataset.kind = "error";
    result.textContent = `The test mail could not be sent: ${job.error}`;
  }
  result.hidden = false;
  renderDiagnostics(job);
  if (watching) announce(result.textContent);
  watching = false;
  refresh();
}

function renderDiagnostics(job) {
  const list = $("test-detail-list");
  list.replaceChildren();
  const steps = Array.isArray(job.details) ? job.details : [];
  for (const d of steps) {
    const li = document.createElement("li");
    const level = ["info", "warning", "error"].includes(d.level) ? d.level : "info";
    li.className = `diag diag--${level}`;
    const head = document.createElement("div");
    head.className = "diag__head";
    const step = document.createElement("span");
    step.className = "diag__step";
    step.textContent = d.step || "";
    head.append(step);
    if (level !== "info") {
      const tag = document.createElement("span");
      tag.className = "diag__level";
      tag.textContent = level;
      head.append(tag);
    }
    if (typeof d.elapsed_ms === "number") {
      const time = document.createElement("span");
      time.className = "diag__time";
      time.textContent = `${d.elapsed_ms < 10 ? d.elapsed_ms.toFixed(1) : Math.round(d.elapsed_ms)} ms`;
      head.append(time);
    }
    const msg = document.createElement("div");
    msg.className = "diag__msg";
    msg.textContent = d.message || "";
    li.append(head, msg);
    list.append(li);
  }
  if (!steps.length) {
    const li = document.createElement("li");
    li.className = "diag";
    li.textContent = "No diagnostics were recorded.";
    list.append(li);
  }
  const transcript = Array.isArray(job.transcript) ? job.transcript : [];
  $("test-transcript").textContent = transcript.length ? transcript.join("\n") : "(no SMTP dialogue)";
  const details = $("test-details");
  details.hidden = false;
}
