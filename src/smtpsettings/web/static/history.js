// The change history under the form, in the form's words.

import { SMTP, api } from "./api.js";
import { $, addressText } from "./dom.js";
import { dateFormat } from "./format.js";
import { fieldLabel } from "./settings.js";



export async function loadHistory() {
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
