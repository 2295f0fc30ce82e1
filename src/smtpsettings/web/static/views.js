// Which view is shown (loading, sign-in, access denied, settings), live announcements, notices.

import { SESSION_KEY } from "./api.js";
import { $, addressText } from "./dom.js";
import { stopOutboxRefresh } from "./outbox.js";
import { stopPolling } from "./testmail.js";


const views = ["loading", "signin", "denied", "settings"];
export let currentView = "loading";

export function show(view) {
  currentView = view;
  for (const name of views) $(`view-${name}`).hidden = name !== view;
  const signedIn = view === "settings" || view === "denied";
  $("account").hidden = !signedIn;
  const who = sessionStorage.getItem(SESSION_KEY) || "";
  $("account-email").replaceChildren(addressText(who));
  $("test-to").placeholder = who || "your own email address";
  $("denied-who").textContent = who ? ` as ${who}` : "";
  if (view !== "settings") {
    stopPolling();
    stopOutboxRefresh();
  }
}

export function announce(text) {
  const el = $("announcer");
  el.textContent = "";
  // A fresh text node after a tick is announced even when the text repeats.
  setTimeout(() => { el.textContent = text; }, 50);
}

// Notices stay in the page (empty ones take no room), so that as live regions they are announced when filled.
export function setNotice(el, text, kind) {
  el.textContent = text || "";
  if (kind) el.dataset.kind = kind;
}

/** Back to the sign-in form, with an optional message ("Your session has expired…"). */
export function toSignIn(message, kind = "warning") {
  stopPolling();
  sessionStorage.removeItem(SESSION_KEY);
  show("signin");
  setNotice($("signin-message"), message, kind);
  setNotice($("signin-error"), "");
  $("signin-password").value = "";
  $("signin-email").focus();
}

export const sessionExpired = () => toSignIn("Your session has expired, sign in again.");

/** Common answers to any signed-in request: true when handled (the caller stops). */
export function handledAuthProblem(res) {
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
