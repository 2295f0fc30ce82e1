// The SMTP settings admin page. Plain JS, no dependencies; talks only to the same-origin JSON API.
"use strict";

(() => {
  const API = "/api/2.0";
  const SMTP = `${API}/smtpsettings/smtp`;
  const MAX_LENGTH = 255;
  const DEFAULT_PORT = 25;
  const POLL_MS = 1000;
  // The server's rules (src/smtpsettings/domain/smtp.py and accounts.valid_email), mirrored.
  const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
  const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
  const SESSION_KEY = "smtpsettings.signedInAs";

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- API ----------------------------------------

  /** One JSON request. Resolves to {status, body, headers}; status 0 when the server could not be reached. */
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      return { status: 0, body: null, headers: new Headers() };
    }
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  const errorMessage = (res, fallback) =>
    (res.body && res.body.error && typeof res.body.error.message === "string" && res.body.error.message) || fallback;

  function describeWait(seconds) {
    if (!Number.isFinite(seconds) || seconds <= 0) return "a moment";
    if (seconds < 90) return `${Math.ceil(seconds)} second${Math.ceil(seconds) === 1 ? "" : "s"}`;
    const minutes = Math.ceil(seconds / 60);
    return `${minutes} minute${minutes === 1 ? "" : "s"}`;
  }

  const retryAfter = (res) => Number.parseInt(res.headers.get("Retry-After") || "", 10);

  const unreachable = "The server could not be reached. Check your connection and try again.";

  // ---------------------------------------------------------------- views --------------------------------------

  const views = ["loading", "signin", "denied", "settings"];
  let currentView = "loading";

  function show(view) {
    currentView = view;
    for (const name of views) $(`view-${name}`).hidden = name !== view;
    const signedIn = view === "settings" || view === "denied";
    $("account").hidden = !signedIn;
    const who = sessionStorage.getItem(SESSION_KEY) || "";
    $("account-email").textContent = who;
    $("denied-who").textContent = who ? ` as ${who}` : "";
    if (view !== "settings") stopPolling();
  }

  function announce(text) {
    const el = $("announcer");
    el.textContent = "";
    // A fresh text node after a tick is announced even when the text repeats.
    setTimeout(() => { el.textContent = text; }, 50);
  }

  // Notices stay in the page (empty ones take no room), so that as live regions they are announced when filled.
  function setNotice(el, text, kind) {
    el.textContent = text || "";
    if (kind) el.dataset.kind = kind;
  }

  /** Back to the sign-in form, with an optional message ("Your session has expired…"). */
  function toSignIn(message, kind = "warning") {
    stopPolling();
    sessionStorage.removeItem(SESSION_KEY);
    show("signin");
    setNotice($("signin-message"), message, kind);
    setNotice($("signin-error"), "");
    $("signin-password").value = "";
    $("signin-email").focus();
  }

  const sessionExpired = () => toSignIn("Your session has expired, sign in again.");

  /** Common answers to any signed-in request: true when handled (the caller stops). */
  function handledAuthProblem(res) {
    if (res.status === 401) {
      sessionExpired();
      return true;
    }
    if (res.status === 403) {
      show("denied");
      $("signout-denied").focus();
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- sign-in / out ------------------------------

  function signInFieldError(input, text) {
    const err = $(`${input.id}-error`);
    err.textContent = text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  async function onSignIn(event) {
    event.preventDefault();
    const email = $("signin-email");
    const password = $("signin-password");
    signInFieldError(email, email.value.trim() ? "" : "Enter your email.");
    signInFieldError(password, password.value ? "" : "Enter your password.");
    setNotice($("signin-error"), "");
    if (!email.value.trim()) return email.focus();
    if (!password.value) return password.focus();

    const button = $("signin-submit");
    button.disabled = true;
    button.textContent = "Signing in…";
    const res = await api("POST", `${API}/authentication`, { userName: email.value.trim(), password: password.value });
    button.disabled = false;
    button.textContent = "Sign in";

    if (res.status === 200) {
      sessionStorage.setItem(SESSION_KEY, email.value.trim());
      password.value = "";
      setNotice($("signin-message"), "");
      await loadSettings({ focus: true });
      return;
    }
    let text;
    if (res.status === 401) text = "The email or password is incorrect.";
    else if (res.status === 429) {
      text = `Too many failed sign-in attempts. Try again in ${describeWait(retryAfter(res))}.`;
    } else if (res.status === 0) text = unreachable;
    else text = errorMessage(res, `Sign-in failed (HTTP ${res.status}).`);
    setNotice($("signin-error"), text);
    password.select();
    password.focus();
  }

  async function onSignOut() {
    stopPolling();
    await api("POST", `${API}/authentication/logout`);
    toSignIn("You have signed out.", "info");
  }

  // ---------------------------------------------------------------- the settings form --------------------------

  const fields = {
    host: $("smtp-host"),
    port: $("smtp-port"),
    senderAddress: $("smtp-sender"),
    senderDisplayName: $("smtp-display-name"),
    credentialsUserName: $("smtp-login"),
    credentialsUserPassword: $("smtp-password"),
  };
  const enableAuth = $("smtp-auth");
  const useNtlm = $("smtp-ntlm");
  const enableSSL = $("smtp-ssl");

  // PascalCase (validation errors) and DocSpace's sentences -> the field they are about.
  const SERVER_KEYS = {
    Host: "host",
    Port: "port",
    SenderAddress: "senderAddress",
    SenderDisplayName: "senderDisplayName",
    CredentialsUserName: "credentialsUserName",
    CredentialsUserPassword: "credentialsUserPassword",
  };
  const SERVER_MESSAGES = {
    "Empty smtp host.": "host",
    "Empty sender address.": "senderAddress",
    "Empty user name.": "credentialsUserName",
    "Empty password.": "credentialsUserPassword",
  };
  const EXPLAIN = {
    "Empty password.": "Enter the password again: the stored one is kept only while host, port and login stay the same.",
  };
  const FIELD_LABELS = {
    host: "Host",
    port: "Port",
    senderAddress: "Sender email address",
    senderDisplayName: "Sender display name",
    credentialsUserName: "Host login",
    credentialsUserPassword: "Host password",
    enableAuth: "Authentication",
    enableSSL: "Enable SSL",
    useNtlm: "Auth via NTLM",
  };

  let saved = null; // the settings as the server last returned them
  const touched = new Set(); // fields whose client-side errors are shown
  const serverErrors = {}; // field -> message from the last 400, until the field is edited
  let busy = false; // a save or reset is in flight

  const codePoints = (s) => [...s].length;

  /** The form as the wire object (strings trimmed, as the server stores them). */
  function formValues() {
    const auth = enableAuth.checked;
    const portText = fields.port.value.trim();
    return {
      host: fields.host.value.trim(),
      port: /^\d{1,5}$/.test(portText) ? Number(portText) : portText,
      senderAddress: fields.senderAddress.value.trim(),
      senderDisplayName: fields.senderDisplayName.value.trim(),
      credentialsUserName: auth ? fields.credentialsUserName.value.trim() : "",
      credentialsUserPassword: auth ? fields.credentialsUserPassword.value : "",
      enableSSL: enableSSL.checked,
      enableAuth: auth,
      useNtlm: auth ? useNtlm.checked : false,
    };
  }

  /** Whether the server keeps the stored password when this form is saved without one. */
  function storedPasswordKept(v) {
    return Boolean(
      saved && !saved.isDefaultSettings && saved.enableAuth && v.enableAuth &&
      saved.host.toLowerCase() === v.host.toLowerCase() && saved.port === v.port &&
      saved.credentialsUserName === v.credentialsUserName,
    );
  }

  function checkText(label, value, { required = false, requiredMessage } = {}) {
    if (required && !value) return requiredMessage || `Enter the ${label.toLowerCase()}.`;
    if (codePoints(value) > MAX_LENGTH) return `${label} must be at most ${MAX_LENGTH} characters.`;
    if (CONTROL.test(value)) return `${label} must not contain control characters (line breaks, tabs…).`;
    return "";
  }

  /** The server's host rule (domain/smtp.check_host) in a simple form: the common mistakes, said plainly. */
  function hostProblem(host) {
    if (/\s/.test(host)) return "The host must not contain spaces.";
    if (host.includes("/")) return "Give only the server's name, not a URL.";
    if (host.includes("@")) return "Give the server's name, not an email address.";
    if (/^\[.*\]:\d+$/.test(host) || /^[^:]*:[^:]*$/.test(host)) return "Give the port in the Port field, not in the host.";
    if (host.startsWith("[") || host.includes(":")) return ""; // an IPv6 address: the server checks it
    const labels = host.split(".");
    if (labels.every((label) => /^(0x[0-9a-f]*|\d+)$/i.test(label))) {
      const octet = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
      return new RegExp(`^${octet}(\\.${octet}){3}$`).test(host) ? "" : "Enter an IPv4 address as four numbers from 0 to 255, like 192.0.2.25.";
    }
    if (labels.slice(0, -1).includes("")) return "The host has an empty part (two dots in a row, or a dot at the start).";
    if (host.endsWith(".")) return "Leave out the dot at the end of the host.";
    const bad = [...host].find((c) => c < "\u0080" && !/[A-Za-z0-9.-]/.test(c));
    if (bad) return `The host must not contain "${bad}".`;
    if (labels.some((label) => label.length > 63)) return "Each part of the host between dots must be at most 63 characters.";
    if (host.length > 253) return "The host must be at most 253 characters.";
    if (labels.some((label) => label.startsWith("-") || label.endsWith("-"))) return "A part of the host must not start or end with a hyphen.";
    return "";
  }

  /** Client-side errors by field, mirroring the server's rules. */
  function validate(v) {
    const errors = {};
    const raw = (name) => fields[name].value;
    // Length and control characters are judged on the text as typed; the server checks before trimming.
    errors.host = checkText("Host", v.host, { required: true, requiredMessage: "Enter the SMTP host." }) ||
      checkText("Host", raw("host")) || hostProblem(v.host);
    const portText = raw("port").trim();
    if (!portText) errors.port = "Enter the port (1–65535; usually 25, 465 or 587).";
    else if (!/^\d+$/.test(portText)) errors.port = "The port must be a whole number from 1 to 65535.";
    else if (Number(portText) < 1 || Number(portText) > 65535) errors.port = "The port must be between 1 and 65535.";
    errors.senderAddress =
      checkText("Sender email address", v.senderAddress, { required: true, requiredMessage: "Enter the sender email address." }) ||
      checkText("Sender email address", raw("senderAddress")) ||
      (EMAIL.test(v.senderAddress) && v.senderAddress.length <= 254 ? "" : "Enter a valid email address, like noreply@example.com.");
    errors.senderDisplayName = checkText("Sender display name", raw("senderDisplayName"));
    if (v.enableAuth) {
      errors.credentialsUserName =
        checkText("Host login", v.credentialsUserName, { required: true, requiredMessage: "Enter the login: it is required when authentication is on." }) ||
        checkText("Host login", raw("credentialsUserName"));
      if (!v.credentialsUserPassword && !storedPasswordKept(v)) {
        errors.credentialsUserPassword = saved && !saved.isDefaultSettings && saved.enableAuth
          ? "Enter the password again: host, port or login changed, so the stored password is not kept."
          : "Enter the password.";
      }
    }
    for (const key of Object.keys(errors)) if (!errors[key]) delete errors[key];
    return errors;
  }

  function isDirty(v) {
    if (!saved) return false;
    if (v.credentialsUserPassword) return true;
    const auth = v.enableAuth;
    return (
      v.host !== saved.host || v.port !== saved.port || v.senderAddress !== saved.senderAddress ||
      v.senderDisplayName !== saved.senderDisplayName || v.enableSSL !== saved.enableSSL ||
      auth !== saved.enableAuth ||
      (auth && (v.credentialsUserName !== saved.credentialsUserName || v.useNtlm !== saved.useNtlm))
    );
  }

  function setFieldError(name, message) {
    const input = fields[name];
    const err = $(`${input.id}-error`);
    if (err.textContent !== message) err.textContent = message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  /** Recompute errors, hints and button states from the form. */
  function refresh() {
    const v = formValues();
    const errors = validate(v);
    for (const name of Object.keys(fields)) {
      // The password error stems from other fields (host, port, login): shown as soon as the form changed.
      const visible = touched.has(name) || (name === "credentialsUserPassword" && isDirty(v));
      const shown = serverErrors[name] || (visible ? errors[name] || "" : "");
      setFieldError(name, shown);
    }

    const auth = v.enableAuth;
    for (const el of [fields.credentialsUserName, fields.credentialsUserPassword, useNtlm]) el.disabled = !auth;
    $("auth-fields").classList.toggle("is-disabled", !auth);

    const passwordStored = Boolean(saved && !saved.isDefaultSettings && saved.enableAuth);
    // When host, port or login changed, the password's error says why it is needed: no hint then.
    const hint = passwordStored && auth && storedPasswordKept(v) && !serverErrors.credentialsUserPassword
      ? "A password is stored. Leave the field empty to keep it."
      : "";
    const hintEl = $("smtp-password-hint");
    if (hintEl.textContent !== hint) hintEl.textContent = hint;
    fields.credentialsUserPassword.placeholder = passwordStored && auth && storedPasswordKept(v) ? "Stored password (unchanged)" : "";

    const dirty = isDirty(v);
    const invalid = Object.keys(errors).length > 0;
    $("save-button").disabled = busy || !dirty || invalid;
    $("reset-button").disabled = busy || !saved || saved.isDefaultSettings;
    const testing = testRunning || testStarting;
    $("test-button").disabled = busy || dirty || testing;
    const testHint = dirty ? "Save the changes first: the test uses the saved settings." : "";
    if ($("test-button-hint").textContent !== testHint) $("test-button-hint").textContent = testHint;

    let formHint = "";
    if (dirty && invalid) {
      const labels = Object.keys(errors).map((k) => FIELD_LABELS[k]);
      formHint = `Correct ${labels.join(", ")} to save.`;
    } else if (dirty) formHint = "You have unsaved changes.";
    const formHintEl = $("form-hint");
    if (formHintEl.textContent !== formHint) formHintEl.textContent = formHint;
  }

  function fill(settings) {
    saved = settings;
    fields.host.value = settings.host || "";
    fields.port.value = String(settings.port ?? DEFAULT_PORT);
    fields.senderAddress.value = settings.senderAddress || "";
    fields.senderDisplayName.value = settings.senderDisplayName || "";
    fields.credentialsUserName.value = settings.credentialsUserName || "";
    fields.credentialsUserPassword.value = "";
    enableAuth.checked = Boolean(settings.enableAuth);
    useNtlm.checked = Boolean(settings.useNtlm);
    enableSSL.checked = Boolean(settings.enableSSL);
    touched.clear();
    for (const key of Object.keys(serverErrors)) delete serverErrors[key];

    const badge = $("source-badge");
    if (settings.isDefaultSettings) {
      badge.textContent = "Server default";
      badge.dataset.kind = "default";
      $("source-text").textContent =
        "This portal uses the server's default SMTP settings. Change them and save to give the portal settings of its own.";
    } else {
      badge.textContent = "Portal's own settings";
      badge.dataset.kind = "custom";
      $("source-text").textContent =
        "This portal uses its own SMTP settings. Restore default to go back to the server's settings.";
    }
    refresh();
  }

  function clearFormMessages() {
    setNotice($("form-alert"), "");
    setNotice($("form-status"), "");
  }

  /** Load the settings (the first request of a signed-in page), then the audit and any running test. */
  async function loadSettings({ focus = false } = {}) {
    const res = await api("GET", SMTP);
    if (res.status === 401) {
      // Someone who was signed in on this tab and is no longer: say why.
      if (wasSignedIn()) sessionExpired();
      else toSignIn("");
      return;
    }
    if (res.status === 403) {
      show("denied");
      if (focus) $("signout-denied").focus();
      return;
    }
    if (res.status !== 200 || !res.body || !res.body.response) {
      show("signin");
      setNotice($("signin-message"), res.status === 0 ? unreachable : errorMessage(res, `The settings could not be loaded (HTTP ${res.status}).`), "error");
      return;
    }
    if (!wasSignedIn()) sessionStorage.setItem(SESSION_KEY, "");
    show("settings");
    clearFormMessages();
    fill(res.body.response);
    if (focus) $("settings-title").focus();
    await Promise.all([loadHistory(), resumeTest()]);
  }

  async function onSave(event) {
    event.preventDefault();
    const v = formValues();
    for (const name of Object.keys(fields)) touched.add(name);
    refresh();
    const errors = validate(v);
    if (Object.keys(errors).length) {
      fields[Object.keys(errors)[0]].focus();
      return;
    }
    if (!isDirty(v)) return;
    const body = { ...v };
    if (!body.credentialsUserPassword) delete body.credentialsUserPassword;

    clearFormMessages();
    busy = true;
    $("save-button").textContent = "Saving…";
    refresh();
    const res = await api("POST", SMTP, body);
    busy = false;
    $("save-button").textContent = "Save";

    if (handledAuthProblem(res)) return;
    if (res.status === 200 && res.body && res.body.response) {
      fill(res.body.response);
      hideTestPanel();
      setNotice($("form-status"), "Settings saved.", "success");
      await loadHistory();
      return;
    }
    if (res.status === 400) {
      showServerErrors(res);
      refresh();
      return;
    }
    refresh();
    const text = res.status === 0 ? unreachable : errorMessage(res, `The settings could not be saved (HTTP ${res.status}).`);
    setNotice($("form-alert"), text);
  }

  /** A 400 answer, field by field: PascalCase validation errors, or DocSpace's single sentence. */
  function showServerErrors(res) {
    const unmatched = [];
    const errors = res.body && res.body.response && res.body.response.errors;
    let first = null;
    if (errors && typeof errors === "object") {
      for (const [key, messages] of Object.entries(errors)) {
        const text = (Array.isArray(messages) ? messages : [messages]).join(" ");
        const field = SERVER_KEYS[key];
        if (field) {
          serverErrors[field] = text;
          first = first || field;
        } else unmatched.push(text);
      }
    }
    const message = errorMessage(res, "");
    const field = SERVER_MESSAGES[message];
    if (field) {
      serverErrors[field] = EXPLAIN[message] ? `${message} ${EXPLAIN[message]}` : message;
      first = first || field;
    } else if (!first && message) unmatched.push(message);
    if (unmatched.length || !first) {
      setNotice($("form-alert"), `The server refused the settings: ${unmatched.join(" ") || "invalid settings."}`);
    } else {
      setNotice($("form-alert"), "The server refused the settings: correct the highlighted fields.");
    }
    if (first) {
      // The password field is disabled when authentication is off; errors there still show.
      refresh();
      if (!fields[first].disabled) fields[first].focus();
    }
  }

  // ---------------------------------------------------------------- restore default ----------------------------

  function onResetClick() {
    const dialog = $("reset-dialog");
    dialog.returnValue = "";
    dialog.showModal();
    $("reset-cancel").focus();
  }

  async function onResetDialogClose() {
    const confirmed = $("reset-dialog").returnValue === "confirm";
    if (!confirmed) {
      $("reset-button").focus();
      return;
    }
    clearFormMessages();
    busy = true;
    refresh();
    const res = await api("DELETE", SMTP);
    busy = false;
    if (handledAuthProblem(res)) return;
    if (res.status === 200 && res.body && res.body.response) {
      fill(res.body.response);
      hideTestPanel();
      setNotice($("form-status"), "Default settings restored.", "success");
      $("settings-title").focus();
      await loadHistory();
      return;
    }
    refresh();
    setNotice($("form-alert"), res.status === 0 ? unreachable : errorMessage(res, `Restoring the defaults failed (HTTP ${res.status}).`));
  }

  // ---------------------------------------------------------------- test mail ----------------------------------

  let pollTimer = null;
  let testStarting = false; // the start request is in flight
  let testRunning = false; // a job we follow has not completed
  let watching = false; // we saw this job running (or started it): announce its end

  function stopPolling() {
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = null;
  }

  const wasSignedIn = () => sessionStorage.getItem(SESSION_KEY) !== null;

  function hideTestPanel() {
    stopPolling();
    testRunning = false;
    watching = false;
    $("test-panel").hidden = true;
  }

  async function onTestClick() {
    clearFormMessages();
    testStarting = true;
    refresh();
    const res = await api("GET", `${SMTP}/test`);
    testStarting = false;
    if (handledAuthProblem(res)) return;
    if (res.status === 200 && res.body && res.body.response) {
      renderTest(res.body.response, { fresh: true });
      return;
    }
    refresh();
    let text;
    if (res.status === 429) {
      text = `${errorMessage(res, "Too many test messages.")} You can send the next one in ${describeWait(retryAfter(res))}.`;
    } else if (res.status === 0) text = unreachable;
    else text = errorMessage(res, `The test could not be started (HTTP ${res.status}).`);
    setNotice($("form-alert"), text);
  }

  /** On page load: follow a test that is still running, or show the last result. */
  async function resumeTest() {
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
    const who = sessionStorage.getItem(SESSION_KEY);
    if (ok) {
      result.dataset.kind = "success";
      result.textContent = `The test mail was sent${who ? ` to ${who}` : " to your email address"}. Check the inbox.`;
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

  // ---------------------------------------------------------------- change history -----------------------------

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  async function loadHistory() {
    const res = await api("GET", `${SMTP}/audit`);
    if (res.status !== 200 || !res.body || !Array.isArray(res.body.response)) return;
    const rows = res.body.response.slice(0, 10);
    const list = $("history-list");
    list.replaceChildren();
    for (const row of rows) {
      const li = document.createElement("li");
      li.className = "history__row";
      const what = document.createElement("div");
      what.className = "history__what";
      const action = document.createElement("span");
      action.className = `history__action history__action--${row.action === "reset" ? "reset" : "save"}`;
      action.textContent = row.action === "reset" ? "Restored default" : "Saved";
      what.append(action);
      const changed = Array.isArray(row.changedFields) ? row.changedFields : [];
      const fieldsText = document.createElement("span");
      fieldsText.className = "history__fields";
      fieldsText.textContent = changed.length
        ? changed.map((f) => FIELD_LABELS[f] || f).join(", ")
        : "no field changed";
      what.append(fieldsText);

      const meta = document.createElement("div");
      meta.className = "history__meta";
      const when = document.createElement("time");
      when.dateTime = row.createdAt || "";
      const date = new Date(row.createdAt);
      when.textContent = Number.isNaN(date.getTime()) ? row.createdAt || "" : dateFormat.format(date);
      const by = document.createElement("span");
      by.textContent = `${row.userEmail || "unknown user"}${row.clientAddress ? ` · ${row.clientAddress}` : ""}`;
      meta.append(when, by);
      li.append(what, meta);
      list.append(li);
    }
    list.hidden = rows.length === 0;
    $("history-empty").hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- wiring -------------------------------------

  function onFieldInput(name) {
    touched.add(name);
    delete serverErrors[name];
    // A changed host, port or login can make the password error on the password field moot or current.
    if (["host", "port", "credentialsUserName"].includes(name)) delete serverErrors.credentialsUserPassword;
    setNotice($("form-status"), "");
    refresh();
  }

  function init() {
    $("signin-form").addEventListener("submit", onSignIn);
    for (const id of ["signin-email", "signin-password"]) {
      $(id).addEventListener("input", (e) => signInFieldError(e.target, ""));
    }
    $("signout-top").addEventListener("click", onSignOut);
    $("signout-denied").addEventListener("click", onSignOut);

    for (const [name, input] of Object.entries(fields)) {
      input.addEventListener("input", () => onFieldInput(name));
      input.addEventListener("blur", () => {
        if (input.value !== "" || touched.has(name)) {
          touched.add(name);
          refresh();
        }
      });
    }
    for (const box of [enableAuth, useNtlm, enableSSL]) {
      box.addEventListener("change", () => {
        if (box === enableAuth) delete serverErrors.credentialsUserPassword;
        setNotice($("form-status"), "");
        refresh();
      });
    }
    // Enter in a checkbox/switch submits the form too, as in a text field.
    $("smtp-form").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target instanceof HTMLInputElement && e.target.type === "checkbox") {
        e.preventDefault();
        $("smtp-form").requestSubmit();
      }
    });
    $("smtp-form").addEventListener("submit", onSave);
    $("reset-button").addEventListener("click", onResetClick);
    $("reset-dialog").addEventListener("close", onResetDialogClose);
    $("test-button").addEventListener("click", onTestClick);

    // A token revoked elsewhere (sign-out in another tab, expiry) is noticed when the tab comes back.
    const recheck = async () => {
      if (currentView !== "settings" && currentView !== "denied") return;
      const res = await api("GET", `${API}/authentication`);
      if (res.status === 200 && res.body && res.body.response === false) sessionExpired();
    };
    document.addEventListener("visibilitychange", () => { if (!document.hidden) recheck(); });
    window.addEventListener("focus", recheck);
    setInterval(recheck, 60_000);

    loadSettings();
  }

  init();
})();
