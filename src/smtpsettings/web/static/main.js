// The SMTP settings admin page: sign-in and the wiring of every part. Plain ES modules, no build step and no
// dependencies; the page talks only to the same-origin JSON API.

import { API, SESSION_KEY, api, describeWait, errorMessage, retryAfter, unreachable } from "./api.js";
import { $ } from "./dom.js";
import { loadOutbox, onOutboxAction } from "./outbox.js";
import { clearFormMessages, credentialRadios, enableAuth, enableSSL, fields, fileInputs, forgetSecretErrors, groups, loadSettings, onFieldInput, onFilePicked, onProviderChange, onResetClick, onResetDialogClose, onSave, refresh, serverErrors, touched } from "./settings.js";
import { onTestClick, setTestToError, stopPolling } from "./testmail.js";
import { currentView, sessionExpired, setNotice, toSignIn } from "./views.js";


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

export function init() {
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
  for (const box of [enableAuth, enableSSL, ...groups.authMethod.radios, ...credentialRadios]) {
    box.addEventListener("change", () => {
      if (box !== enableSSL) forgetSecretErrors();
      delete serverErrors.authMethod;
      clearFormMessages();
      refresh();
    });
  }
  for (const radio of groups["oauth2.provider"].radios) {
    radio.addEventListener("change", () => {
      forgetSecretErrors();
      onProviderChange();
    });
  }
  for (const [name, input] of Object.entries(fileInputs)) input.addEventListener("change", () => onFilePicked(name));
  // Enter in a checkbox, switch or radio button submits the form too, as in a text field.
  $("smtp-form").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target instanceof HTMLInputElement && ["checkbox", "radio"].includes(e.target.type)) {
      e.preventDefault();
      $("smtp-form").requestSubmit();
    }
  });
  $("smtp-form").addEventListener("submit", onSave);
  $("reset-button").addEventListener("click", onResetClick);
  $("reset-dialog").addEventListener("close", onResetDialogClose);
  $("test-button").addEventListener("click", onTestClick);
  $("test-to").addEventListener("input", () => setTestToError(""));
  // Enter in the recipient's field sends the test mail; it does not save the form around it.
  $("test-to").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    if (!$("test-button").disabled) onTestClick();
  });
  $("outbox-status").addEventListener("change", () => {
    setNotice($("outbox-alert"), "");
    loadOutbox();
  });
  $("outbox-refresh").addEventListener("click", () => {
    setNotice($("outbox-alert"), "");
    loadOutbox();
  });
  // One listener for every row's buttons: rows are rebuilt on each refresh.
  $("outbox-rows").addEventListener("click", (e) => {
    const button = e.target instanceof Element ? e.target.closest("button[data-action]") : null;
    const row = button && button.closest("tr");
    if (row) onOutboxAction(row.dataset.id, button.dataset.action);
  });

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
