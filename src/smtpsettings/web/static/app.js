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

  /** An address that may wrap only after its "@" and before its dots, never inside a word. */
  function addressText(address) {
    const span = document.createElement("span");
    span.className = "address";
    const parts = address.split(/(?<=@)|(?=\.)/);
    parts.forEach((part, i) => {
      if (i) span.append(document.createElement("wbr"));
      span.append(part);
    });
    return span;
  }

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
    $("account-email").replaceChildren(addressText(who));
    $("test-to").placeholder = who || "your own email address";
    $("denied-who").textContent = who ? ` as ${who}` : "";
    if (view !== "settings") {
      stopPolling();
      stopOutboxRefresh();
    }
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
    "oauth2.tenantId": $("oauth2-tenant"),
    "oauth2.clientId": $("oauth2-client-id"),
    "oauth2.clientSecret": $("oauth2-client-secret"),
    "oauth2.certificate": $("oauth2-certificate"),
    "oauth2.serviceAccountKey": $("oauth2-key"),
    "oauth2.tokenUrl": $("oauth2-token-url"),
    "oauth2.scope": $("oauth2-scope"),
  };
  const enableAuth = $("smtp-auth");
  const enableSSL = $("smtp-ssl");
  const radios = (name) => [...document.querySelectorAll(`input[type="radio"][name="${name}"]`)];
  // Radio groups, each with an error line of its own (the group's fieldset is described by it).
  const groups = {
    authMethod: { radios: radios("authMethod"), error: $("smtp-method-error") },
    "oauth2.provider": { radios: radios("oauth2Provider"), error: $("oauth2-provider-error") },
  };
  const credentialRadios = radios("oauth2Credential");
  const fileInputs = { "oauth2.certificate": $("oauth2-certificate-file"), "oauth2.serviceAccountKey": $("oauth2-key-file") };
  const radioValue = (list) => (list.find((r) => r.checked) || { value: "" }).value;
  const setRadio = (list, value) => { for (const r of list) r.checked = r.value === value; };

  const SECRETS = ["clientSecret", "certificate", "serviceAccountKey"];
  // The server's limits of the OAuth 2.0 fields (domain/smtp._OAUTH2_FIELDS), in characters.
  const OAUTH2_MAX = {
    tenantId: MAX_LENGTH,
    clientId: MAX_LENGTH,
    clientSecret: 4096,
    certificate: 32768,
    serviceAccountKey: 32768,
    tokenUrl: 2048,
    scope: 1024,
  };
  // In PEM and JSON, line breaks and tabs are layout; other control characters are damage (as the server says).
  const CONTROL_BUT_LAYOUT = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u2028\u2029]/;
  const TENANT = /^[A-Za-z0-9][A-Za-z0-9.-]*$/;
  // RFC 6749 3.3: printable ASCII but space, '"' and '\', in names separated by single spaces.
  const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/;
  // A PEM certificate plus key is a few KiB, a Google key about 2.4 KiB; the request body may hold 64 KiB.
  const MAX_FILE_BYTES = 32 * 1024;
  // What the server assumes when a field is left empty (mail/oauth2.default_token_url and default_scope);
  // shown as placeholders. Choosing Microsoft 365 or Google also sets host, port and SSL (STARTTLS on 587).
  const PROVIDERS = {
    microsoft: {
      label: "Microsoft 365",
      preset: { host: "smtp.office365.com", port: 587 },
      tokenUrl: (tenant) => `https://login.microsoftonline.com/${tenant || "{tenant}"}/oauth2/v2.0/token`,
      scope: "https://outlook.office365.com/.default",
      hint: "An app registration in Microsoft Entra ID with the SMTP.SendAsApp permission. Choosing it sets host " +
        "smtp.office365.com, port 587 and SSL (STARTTLS).",
      loginHint: "The mailbox to send from, e.g. noreply@example.com. The app must have been granted access to it.",
    },
    google: {
      label: "Google Workspace",
      preset: { host: "smtp.gmail.com", port: 587 },
      tokenUrl: () => "https://oauth2.googleapis.com/token",
      scope: "https://mail.google.com/",
      hint: "A service account with domain-wide delegation of the scope https://mail.google.com/. Choosing it " +
        "sets host smtp.gmail.com, port 587 and SSL (STARTTLS).",
      loginHint: "The Workspace user to send as, e.g. noreply@example.com: the service account acts on their behalf.",
    },
    generic: {
      label: "Other token endpoint",
      preset: null,
      tokenUrl: null,
      scope: "",
      hint: "Any OAuth 2.0 token endpoint that issues tokens with the client credentials grant.",
      loginHint: "The user name the mail server expects with the token, usually the mailbox.",
    },
  };

  // PascalCase (validation errors) and DocSpace's sentences -> the field they are about.
  const SERVER_KEYS = {
    Host: "host",
    Port: "port",
    SenderAddress: "senderAddress",
    SenderDisplayName: "senderDisplayName",
    CredentialsUserName: "credentialsUserName",
    CredentialsUserPassword: "credentialsUserPassword",
    AuthMethod: "authMethod",
    "Oauth2.Provider": "oauth2.provider",
    "Oauth2.TenantId": "oauth2.tenantId",
    "Oauth2.ClientId": "oauth2.clientId",
    "Oauth2.ClientSecret": "oauth2.clientSecret",
    "Oauth2.Certificate": "oauth2.certificate",
    "Oauth2.ServiceAccountKey": "oauth2.serviceAccountKey",
    "Oauth2.TokenUrl": "oauth2.tokenUrl",
    "Oauth2.Scope": "oauth2.scope",
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
    useNtlm: "NTLM",
    authMethod: "Sign-in method",
    oauth2: "OAuth 2.0",
    "oauth2.provider": "Provider",
    "oauth2.tenantId": "Tenant ID",
    "oauth2.clientId": "Client ID",
    "oauth2.clientSecret": "Client secret",
    "oauth2.certificate": "Certificate",
    "oauth2.serviceAccountKey": "Service account key",
    "oauth2.tokenUrl": "Token URL",
    "oauth2.scope": "Scope",
    isDefaultSettings: "Use server default",
  };
  /** A field's name as the form says it; one the page does not know yet, in words ("someField" → "Some field"). */
  const fieldLabel = (name) => FIELD_LABELS[name] ||
    name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase().replace(/^./, (c) => c.toUpperCase());
  const SECRET_NOUNS = {
    clientSecret: "client secret",
    certificate: "certificate",
    serviceAccountKey: "service account key",
  };

  let saved = null; // the settings as the server last returned them
  const touched = new Set(); // fields whose client-side errors are shown
  const serverErrors = {}; // field -> message from the last 400 (or an unreadable file), until the field is edited
  let busy = false; // a save or reset is in flight

  const codePoints = (s) => [...s].length;

  /** The saved sign-in method; answers without `authMethod` (an older server) follow `useNtlm`. */
  function savedMethod() {
    if (!saved) return "password";
    if (["password", "ntlm", "oauth2"].includes(saved.authMethod)) return saved.authMethod;
    return saved.useNtlm ? "ntlm" : "password";
  }

  const savedOAuth = () => (saved && saved.oauth2 && typeof saved.oauth2 === "object" ? saved.oauth2 : {});

  /** Which Microsoft credential the saved settings use: the certificate when one is stored. */
  const savedCredential = () => (savedOAuth().certificateStored ? "certificate" : "secret");

  /** The OAuth 2.0 part of the form; only the fields the chosen provider uses carry a value. */
  function oauthValues() {
    const provider = radioValue(groups["oauth2.provider"].radios);
    const credential = provider === "microsoft" ? radioValue(credentialRadios) || "secret" : provider === "generic" ? "secret" : "";
    const text = (name) => fields[`oauth2.${name}`].value.trim();
    return {
      provider,
      credential,
      tenantId: provider === "microsoft" ? text("tenantId") : "",
      clientId: provider === "microsoft" || provider === "generic" ? text("clientId") : "",
      // A secret is sent as typed; PEM and JSON lose only surrounding white space.
      clientSecret: credential === "secret" ? fields["oauth2.clientSecret"].value : "",
      certificate: credential === "certificate" ? text("certificate") : "",
      serviceAccountKey: provider === "google" ? text("serviceAccountKey") : "",
      tokenUrl: provider ? text("tokenUrl") : "",
      scope: provider ? text("scope") : "",
    };
  }

  /** The form as the page sees it (strings trimmed, as the server stores them). */
  function formValues() {
    const auth = enableAuth.checked;
    const method = auth ? radioValue(groups.authMethod.radios) || "password" : "password";
    const portText = fields.port.value.trim();
    return {
      host: fields.host.value.trim(),
      port: /^\d{1,5}$/.test(portText) ? Number(portText) : portText,
      senderAddress: fields.senderAddress.value.trim(),
      senderDisplayName: fields.senderDisplayName.value.trim(),
      credentialsUserName: auth ? fields.credentialsUserName.value.trim() : "",
      credentialsUserPassword: auth && method !== "oauth2" ? fields.credentialsUserPassword.value : "",
      enableSSL: enableSSL.checked,
      enableAuth: auth,
      // NTLM is also said the DocSpace way, so a DocSpace client reading these settings sees it.
      useNtlm: method === "ntlm",
      authMethod: method,
      oauth2: method === "oauth2" ? oauthValues() : null,
    };
  }

  /** The request body of a save: the ten DocSpace fields plus ours; empty secrets are left out (kept). */
  function wireBody(v) {
    const { oauth2, ...body } = v;
    if (!body.credentialsUserPassword) delete body.credentialsUserPassword;
    if (oauth2) {
      const o = { provider: oauth2.provider };
      if (oauth2.provider === "microsoft") o.tenantId = oauth2.tenantId;
      if (oauth2.provider !== "google") o.clientId = oauth2.clientId;
      for (const name of SECRETS) if (oauth2[name]) o[name] = oauth2[name];
      o.tokenUrl = oauth2.tokenUrl;
      o.scope = oauth2.scope;
      body.oauth2 = o;
    }
    return body;
  }

  const sameServerAndLogin = (v) =>
    saved.host.toLowerCase() === v.host.toLowerCase() && saved.port === v.port &&
    saved.credentialsUserName === v.credentialsUserName;

  /** Whether the server keeps the stored password when this form is saved without one. */
  function storedPasswordKept(v) {
    return Boolean(
      saved && !saved.isDefaultSettings && saved.enableAuth && savedMethod() !== "oauth2" && v.enableAuth &&
      v.authMethod !== "oauth2" && sameServerAndLogin(v),
    );
  }

  /** Whether the server keeps a stored OAuth 2.0 secret left empty: the password's rule, extended. */
  function storedSecretKept(v, name) {
    const o = savedOAuth();
    return Boolean(
      saved && !saved.isDefaultSettings && o[`${name}Stored`] && v.oauth2 && sameServerAndLogin(v) &&
      o.provider === v.oauth2.provider && (o.tenantId || "") === v.oauth2.tenantId &&
      (o.clientId || "") === v.oauth2.clientId && (o.tokenUrl || "") === v.oauth2.tokenUrl,
    );
  }

  function checkText(label, value, { required = false, requiredMessage, max = MAX_LENGTH, control = CONTROL } = {}) {
    if (required && !value) return requiredMessage || `Enter the ${label.toLowerCase()}.`;
    if (codePoints(value) > max) return `${label} must be at most ${max} characters.`;
    if (control.test(value)) {
      return control === CONTROL
        ? `${label} must not contain control characters (line breaks, tabs…).`
        : `${label} must not contain control characters: it looks damaged.`;
    }
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

  /** The token URL rule: https, or plain http to this machine only (a local identity provider). */
  function tokenUrlProblem(text) {
    let url;
    try {
      url = new URL(text);
    } catch {
      return "Enter the full address of the token endpoint, starting with https://.";
    }
    if (url.username || url.password) return "The token URL must not contain a user name or password.";
    if (url.protocol === "https:") return "";
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const loopback = host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
    if (url.protocol === "http:" && loopback) return "";
    return "The token URL must start with https:// (plain http only to this machine).";
  }

  /** What the page can see of a PEM bundle; the server checks the rest (an RSA key that fits the certificate). */
  function certificateProblem(pem) {
    if (!/-----BEGIN CERTIFICATE-----/.test(pem)) {
      return "Include the certificate: the text from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----.";
    }
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(pem) || /Proc-Type: 4,ENCRYPTED/.test(pem)) {
      return "The private key is protected by a passphrase: export it without one.";
    }
    if (/-----BEGIN EC PRIVATE (KEY)-----/.test(pem)) return "Microsoft Entra ID needs an RSA key; this one is an EC key.";
    if (!/-----BEGIN (RSA )?PRIVATE KEY-----/.test(pem)) {
      return "Include the private key too: the text from -----BEGIN PRIVATE KEY----- to -----END PRIVATE KEY-----.";
    }
    return "";
  }

  function serviceAccountKeyProblem(text) {
    let key;
    try {
      key = JSON.parse(text);
    } catch {
      return "This is not JSON: paste the whole key file as downloaded from the Google Cloud console.";
    }
    if (!key || typeof key !== "object" || key.type !== "service_account") {
      return 'This is not a service account key (its "type" is "service_account").';
    }
    for (const name of ["client_email", "private_key"]) {
      if (typeof key[name] !== "string" || !key[name]) return `The key lacks "${name}".`;
    }
    return "";
  }

  /** Errors of the OAuth 2.0 fields, for the chosen provider only. */
  function validateOAuth(v) {
    const o = v.oauth2;
    const errors = {};
    const raw = (name) => fields[`oauth2.${name}`].value;
    if (!o.provider) {
      errors["oauth2.provider"] = "Choose who issues the tokens.";
      return errors;
    }
    const required = (message) => ({ required: true, requiredMessage: message });
    const secret = (name) => {
      if (o[name] || storedSecretKept(v, name)) return "";
      return savedOAuth()[`${name}Stored`] && !saved.isDefaultSettings
        ? `Enter the ${SECRET_NOUNS[name]} again: host, port, login, provider, tenant, client ID or token URL changed, so the stored one is not kept.`
        : `Enter the ${SECRET_NOUNS[name]}.`;
    };
    const limits = (name) => ({ max: OAUTH2_MAX[name] });
    if (o.provider === "microsoft") {
      errors["oauth2.tenantId"] = checkText("Tenant ID", o.tenantId, required("Enter the tenant ID (a GUID, or the tenant's domain).")) ||
        checkText("Tenant ID", raw("tenantId")) ||
        (TENANT.test(o.tenantId) ? "" : "The tenant ID is a GUID or a domain name: letters, digits, dots and hyphens only.");
    }
    if (o.provider !== "google") {
      errors["oauth2.clientId"] = checkText("Client ID", o.clientId, required("Enter the client ID.")) ||
        checkText("Client ID", raw("clientId"));
    }
    if (o.credential === "secret") {
      errors["oauth2.clientSecret"] = o.clientSecret ? checkText("The client secret", o.clientSecret, limits("clientSecret")) : secret("clientSecret");
    }
    const layout = (name, label) => checkText(label, o[name], { max: OAUTH2_MAX[name], control: CONTROL_BUT_LAYOUT });
    if (o.credential === "certificate") {
      errors["oauth2.certificate"] = o.certificate
        ? layout("certificate", "The certificate") || certificateProblem(o.certificate)
        : secret("certificate");
    }
    if (o.provider === "google") {
      errors["oauth2.serviceAccountKey"] = o.serviceAccountKey
        ? layout("serviceAccountKey", "The key") || serviceAccountKeyProblem(o.serviceAccountKey)
        : secret("serviceAccountKey");
    }
    errors["oauth2.tokenUrl"] = o.provider === "generic" && !o.tokenUrl
      ? "Enter the token URL: other providers have no default."
      : checkText("Token URL", raw("tokenUrl"), limits("tokenUrl")) || (o.tokenUrl ? tokenUrlProblem(o.tokenUrl) : "");
    errors["oauth2.scope"] = checkText("Scope", raw("scope"), limits("scope")) ||
      (!o.scope || SCOPE.test(o.scope) ? "" : "Give scope names separated by single spaces, without quotes or backslashes.");
    return errors;
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
      if (v.authMethod === "oauth2") {
        if (!errors.credentialsUserName && ["microsoft", "google"].includes(v.oauth2.provider) && !EMAIL.test(v.credentialsUserName)) {
          errors.credentialsUserName = "Enter the mailbox's email address: with Microsoft 365 and Google the login is the mailbox.";
        }
        Object.assign(errors, validateOAuth(v));
      }
      else if (!v.credentialsUserPassword && !storedPasswordKept(v)) {
        errors.credentialsUserPassword = saved && !saved.isDefaultSettings && saved.enableAuth && savedMethod() !== "oauth2"
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
    if (
      v.host !== saved.host || v.port !== saved.port || v.senderAddress !== saved.senderAddress ||
      v.senderDisplayName !== saved.senderDisplayName || v.enableSSL !== saved.enableSSL ||
      auth !== saved.enableAuth
    ) return true;
    if (!auth) return false;
    if (v.credentialsUserName !== saved.credentialsUserName || v.authMethod !== savedMethod()) return true;
    if (v.authMethod !== "oauth2") return false;
    const o = v.oauth2;
    const s = savedOAuth();
    if (SECRETS.some((name) => o[name])) return true;
    if (o.provider !== (s.provider || "")) return true;
    if (o.provider === "microsoft" && o.credential !== savedCredential()) return true;
    return ["tenantId", "clientId", "tokenUrl", "scope"].some((name) => o[name] !== (s[name] || ""));
  }

  function setFieldError(name, message) {
    const input = fields[name];
    const err = $(`${input.id}-error`);
    if (err.textContent !== message) err.textContent = message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  function setGroupError(name, message) {
    const group = groups[name];
    if (group.error.textContent !== message) group.error.textContent = message;
    for (const r of group.radios) {
      if (message) r.setAttribute("aria-invalid", "true");
      else r.removeAttribute("aria-invalid");
    }
  }

  const setText = (el, text) => { if (el.textContent !== text) el.textContent = text; };

  /** Show the fields the chosen method and provider use; the rest are hidden (and so not sent). */
  function refreshOAuth(v) {
    const auth = v.enableAuth;
    const method = radioValue(groups.authMethod.radios) || "password";
    const oauth = method === "oauth2";
    $("password-field").hidden = oauth;
    $("oauth2-fields").hidden = !oauth;
    const o = oauthValues();
    const provider = PROVIDERS[o.provider];
    for (const el of document.querySelectorAll("#oauth2-fields input, #oauth2-fields textarea")) el.disabled = !auth;
    $("oauth2-tenant-field").hidden = o.provider !== "microsoft";
    $("oauth2-client-id-field").hidden = !(o.provider === "microsoft" || o.provider === "generic");
    $("oauth2-credential").hidden = o.provider !== "microsoft";
    $("oauth2-client-secret-field").hidden = o.credential !== "secret";
    $("oauth2-certificate-field").hidden = o.credential !== "certificate";
    $("oauth2-key-field").hidden = o.provider !== "google";
    $("oauth2-endpoint").hidden = !provider;
    setText($("oauth2-provider-hint"), provider ? provider.hint : "");
    setText($("oauth2-client-id-hint"), o.provider === "microsoft" ? "Application (client) ID of the app registration." : "");

    // Defaults as placeholders: an empty field means the provider's default.
    fields["oauth2.tokenUrl"].placeholder = provider && provider.tokenUrl ? provider.tokenUrl(o.tenantId) : "https://login.example.com/oauth2/token";
    fields["oauth2.scope"].placeholder = provider ? provider.scope : "";
    $("oauth2-token-url-req").hidden = o.provider !== "generic";
    setText($("oauth2-token-url-hint"), o.provider === "generic" ? "The provider's token endpoint (https)." : "Leave empty for the default shown.");
    setText($("oauth2-scope-hint"), o.provider === "generic" ? "Leave empty if the provider needs none." : "Leave empty for the default shown.");
    setText($("smtp-login-hint"), auth && oauth && provider ? provider.loginHint : "");

    // Write-only secrets: a hint (and placeholder) while the stored one would be kept.
    const stored = (name) => auth && oauth && storedSecretKept(v, name) && !serverErrors[`oauth2.${name}`];
    const hints = {
      clientSecret: ["A client secret is stored. Leave the field empty to keep it.", "Stored client secret (unchanged)", ""],
      certificate: [
        "A certificate is stored. Leave the field empty to keep it.",
        "Stored certificate (unchanged)",
        "The certificate uploaded to the app registration and its private key, PEM, without a passphrase. " +
          "Paste both, or choose the file(s); they are read here and sent only when you save.",
      ],
      serviceAccountKey: [
        "A service account key is stored. Leave the field empty to keep it.",
        "Stored key (unchanged)",
        "The JSON key file of the service account. Paste it or choose the file; it is read here and sent only when you save.",
      ],
    };
    const ids = { clientSecret: "oauth2-client-secret", certificate: "oauth2-certificate", serviceAccountKey: "oauth2-key" };
    for (const [name, [storedHint, placeholder, plainHint]] of Object.entries(hints)) {
      const keep = stored(name);
      setText($(`${ids[name]}-hint`), keep ? storedHint : plainHint);
      fields[`oauth2.${name}`].placeholder = keep ? placeholder : "";
    }
  }

  /** Recompute errors, hints and button states from the form. */
  function refresh() {
    const v = formValues();
    const errors = validate(v);
    const dirty = isDirty(v);
    for (const name of Object.keys(fields)) {
      // Secret errors stem from other fields (host, port, login, …): shown as soon as the form changed.
      const secret = name === "credentialsUserPassword" || SECRETS.some((s) => name === `oauth2.${s}`);
      const visible = touched.has(name) || (secret && dirty);
      const shown = serverErrors[name] || (visible ? errors[name] || "" : "");
      setFieldError(name, shown);
    }
    for (const name of Object.keys(groups)) {
      // A choice still to make is said as soon as the form changed (Save stays disabled until it is made).
      setGroupError(name, serverErrors[name] || (dirty || touched.has(name) ? errors[name] || "" : ""));
    }

    const auth = v.enableAuth;
    for (const el of [fields.credentialsUserName, fields.credentialsUserPassword, ...groups.authMethod.radios]) el.disabled = !auth;
    $("auth-fields").classList.toggle("is-disabled", !auth);
    refreshOAuth(v);

    const passwordStored = Boolean(saved && !saved.isDefaultSettings && saved.enableAuth && savedMethod() !== "oauth2");
    // When host, port or login changed, the password's error says why it is needed: no hint then.
    const hint = passwordStored && auth && storedPasswordKept(v) && !serverErrors.credentialsUserPassword
      ? "A password is stored. Leave the field empty to keep it."
      : "";
    setText($("smtp-password-hint"), hint);
    fields.credentialsUserPassword.placeholder = passwordStored && auth && storedPasswordKept(v) ? "Stored password (unchanged)" : "";

    const invalid = Object.keys(errors).length > 0;
    $("save-button").disabled = busy || !dirty || invalid;
    $("reset-button").disabled = busy || !saved || saved.isDefaultSettings;
    const testing = testRunning || testStarting;
    $("test-button").disabled = busy || dirty || testing;
    setText($("test-button-hint"), dirty ? "Save the changes first: the test uses the saved settings." : "");

    let formHint = "";
    if (dirty && invalid) {
      const labels = Object.keys(errors).map((k) => FIELD_LABELS[k]);
      formHint = `Correct ${labels.join(", ")} to save.`;
    } else if (dirty) formHint = "You have unsaved changes.";
    setText($("form-hint"), formHint);
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
    enableSSL.checked = Boolean(settings.enableSSL);
    setRadio(groups.authMethod.radios, savedMethod());

    const o = savedOAuth();
    setRadio(groups["oauth2.provider"].radios, PROVIDERS[o.provider] ? o.provider : "");
    setRadio(credentialRadios, savedCredential());
    for (const name of ["tenantId", "clientId", "tokenUrl", "scope"]) fields[`oauth2.${name}`].value = o[name] || "";
    for (const name of SECRETS) fields[`oauth2.${name}`].value = "";
    for (const input of Object.values(fileInputs)) input.value = "";

    touched.clear();
    for (const key of Object.keys(serverErrors)) delete serverErrors[key];

    const badge = $("source-badge");
    if (settings.isDefaultSettings && !settings.host) {
      badge.textContent = "Not set up";
      badge.dataset.kind = "missing";
      $("source-text").textContent =
        "No mail can be sent: this portal has no SMTP settings of its own and the server has no default " +
        "settings to inherit. Enter the mail server's details below and save.";
    } else if (settings.isDefaultSettings) {
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

  /** A provider chosen by the admin: its mail server's host, port and STARTTLS go into the form. */
  function onProviderChange() {
    const provider = PROVIDERS[radioValue(groups["oauth2.provider"].radios)];
    delete serverErrors["oauth2.provider"];
    if (provider && provider.preset) {
      fields.host.value = provider.preset.host;
      fields.port.value = String(provider.preset.port);
      enableSSL.checked = true; // on 587: STARTTLS, required
      for (const name of ["host", "port"]) {
        touched.add(name);
        delete serverErrors[name];
      }
      announce(`${provider.label}: host ${provider.preset.host}, port ${provider.preset.port} and SSL (STARTTLS) set.`);
    }
    setNotice($("form-status"), "");
    refresh();
  }

  /** Read the chosen file(s) into the field, here in the browser: nothing is sent before Save. */
  async function onFilePicked(name) {
    const input = fileInputs[name];
    const files = [...input.files];
    if (!files.length) return;
    const total = files.reduce((n, f) => n + f.size, 0);
    touched.add(name);
    if (total > MAX_FILE_BYTES) {
      input.value = "";
      serverErrors[name] = `That is ${Math.ceil(total / 1024)} KiB, too large for a ${SECRET_NOUNS[name.replace("oauth2.", "")]}: choose the key file itself (a few KiB).`;
      refresh();
      return;
    }
    let texts;
    try {
      texts = await Promise.all(files.map((f) => f.text()));
    } catch {
      input.value = "";
      serverErrors[name] = "The file could not be read.";
      refresh();
      return;
    }
    input.value = ""; // the content is in the field now; picking the same file again reads it again
    fields[name].value = texts.map((t) => t.trim()).join("\n");
    onFieldInput(name);
    announce(`Read ${files.map((f) => f.name).join(" and ")}.`);
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
    await Promise.all([loadHistory(), resumeTest(), loadOutbox()]);
  }

  async function onSave(event) {
    event.preventDefault();
    const v = formValues();
    for (const name of [...Object.keys(fields), ...Object.keys(groups)]) touched.add(name);
    refresh();
    const errors = validate(v);
    if (Object.keys(errors).length) {
      focusField(Object.keys(errors)[0]);
      return;
    }
    if (!isDirty(v)) return;
    const body = wireBody(v);

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
        if (field && (fields[field] || groups[field])) {
          serverErrors[field] = explainServerError(field, text);
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
      focusField(first);
    }
  }

  /** The server's "Empty Oauth2.ClientSecret: …" said as the page says it: what to do, in the field's words. */
  function explainServerError(field, text) {
    const secret = field.replace("oauth2.", "");
    if (!SECRETS.includes(secret) || !text.startsWith("Empty Oauth2.")) return text;
    return `Enter the ${SECRET_NOUNS[secret]} again: the server keeps a stored one only while host, port, login, ` +
      "provider, tenant, client ID and token URL stay as saved.";
  }

  /** Focus a field, or a radio group's chosen (else first) option, unless it cannot take focus now. */
  function focusField(name) {
    const group = groups[name];
    const el = group ? group.radios.find((r) => r.checked) || group.radios[0] : fields[name];
    if (el && !el.disabled && el.offsetParent !== null) el.focus();
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
  let sentTo = { id: "", to: "" }; // the recipient typed for the test this page started

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
      sentTo = { id: res.body.response.id, to };
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

  function setTestToError(text) {
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
    // The status does not say where the mail went: the page remembers it for the test it started.
    const who = (sentTo.id === job.id && sentTo.to) || sessionStorage.getItem(SESSION_KEY);
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
        ? changed.map(fieldLabel).join(", ")
        : "no field changed";
      what.append(fieldsText);

      const meta = document.createElement("div");
      meta.className = "history__meta";
      const when = document.createElement("time");
      when.dateTime = row.createdAt || "";
      const date = new Date(row.createdAt);
      when.textContent = Number.isNaN(date.getTime()) ? row.createdAt || "" : dateFormat.format(date);
      const by = document.createElement("span");
      by.append(row.userEmail ? addressText(row.userEmail) : "unknown user", row.clientAddress ? ` · ${row.clientAddress}` : "");
      meta.append(when, by);
      li.append(what, meta);
      list.append(li);
    }
    list.hidden = rows.length === 0;
    $("history-empty").hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- outgoing mail ------------------------------

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

  function stopOutboxRefresh() {
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

  async function loadOutbox() {
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

  async function onOutboxAction(id, action) {
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

  // ---------------------------------------------------------------- wiring -------------------------------------

  // Fields whose change decides whether a stored secret is kept (the server's rule).
  const SECRET_IDENTITY = ["host", "port", "credentialsUserName", "oauth2.tenantId", "oauth2.clientId", "oauth2.tokenUrl"];

  function forgetSecretErrors() {
    for (const name of ["credentialsUserPassword", ...SECRETS.map((s) => `oauth2.${s}`)]) delete serverErrors[name];
  }

  function onFieldInput(name) {
    touched.add(name);
    delete serverErrors[name];
    // A changed host, port, login or client can make a secret's error moot or current.
    if (SECRET_IDENTITY.includes(name)) forgetSecretErrors();
    clearFormMessages();
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
})();
