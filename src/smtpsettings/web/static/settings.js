// The SMTP settings form: the server's rules mirrored, errors at the fields, save and restore default.

import { SESSION_KEY, SMTP, api, errorMessage, unreachable } from "./api.js";
import { $ } from "./dom.js";
import { loadHistory } from "./history.js";
import { loadOutbox } from "./outbox.js";
import { hideTestPanel, resumeTest, testRunning, testStarting, wasSignedIn } from "./testmail.js";
import { announce, handledAuthProblem, sessionExpired, setNotice, show, toSignIn } from "./views.js";

const MAX_LENGTH = 255;
const DEFAULT_PORT = 25;
// The server's rules (src/smtpsettings/domain/smtp.py and accounts.valid_email), mirrored.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;


export const fields = {
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
export const enableAuth = $("smtp-auth");
export const enableSSL = $("smtp-ssl");
const radios = (name) => [...document.querySelectorAll(`input[type="radio"][name="${name}"]`)];
// Radio groups, each with an error line of its own (the group's fieldset is described by it).
export const groups = {
  authMethod: { radios: radios("authMethod"), error: $("smtp-method-error") },
  "oauth2.provider": { radios: radios("oauth2Provider"), error: $("oauth2-provider-error") },
};
export const credentialRadios = radios("oauth2Credential");
export const fileInputs = { "oauth2.certificate": $("oauth2-certificate-file"), "oauth2.serviceAccountKey": $("oauth2-key-file") };
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
export const fieldLabel = (name) => FIELD_LABELS[name] ||
  name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase().replace(/^./, (c) => c.toUpperCase());
const SECRET_NOUNS = {
  clientSecret: "client secret",
  certificate: "certificate",
  serviceAccountKey: "service account key",
};

let saved = null; // the settings as the server last returned them
export const touched = new Set(); // fields whose client-side errors are shown
export const serverErrors = {}; // field -> message from the last 400 (or an unreadable file), until the field is edited
export let busy = false; // a save or reset is in flight

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
export function refresh() {
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
export function onProviderChange() {
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
export async function onFilePicked(name) {
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

export function clearFormMessages() {
  setNotice($("form-alert"), "");
  setNotice($("form-status"), "");
}

/** Load the settings (the first request of a signed-in page), then the audit and any running test. */
export async function loadSettings({ focus = false } = {}) {
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

export async function onSave(event) {
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

export function onResetClick() {
  const dialog = $("reset-dialog");
  dialog.returnValue = "";
  dialog.showModal();
  $("reset-cancel").focus();
}

export async function onResetDialogClose() {
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


// Fields whose change decides whether a stored secret is kept (the server's rule).
const SECRET_IDENTITY = ["host", "port", "credentialsUserName", "oauth2.tenantId", "oauth2.clientId", "oauth2.tokenUrl"];

export function forgetSecretErrors() {
  for (const name of ["credentialsUserPassword", ...SECRETS.map((s) => `oauth2.${s}`)]) delete serverErrors[name];
}

export function onFieldInput(name) {
  touched.add(name);
  delete serverErrors[name];
  // A changed host, port, login or client can make a secret's error moot or current.
  if (SECRET_IDENTITY.includes(name)) forgetSecretErrors();
  clearFormMessages();
  refresh();
}
