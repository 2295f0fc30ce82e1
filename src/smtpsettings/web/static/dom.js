// Small DOM helpers shared by every part of the page.

export const $ = (id) => document.getElementById(id);

/** An address that may wrap only after its "@" and before its dots, never inside a word. */
export function addressText(address) {
  const span = document.createElement("span");
  span.className = "address";
  const parts = address.split(/(?<=@)|(?=\.)/);
  parts.forEach((part, i) => {
    if (i) span.append(document.createElement("wbr"));
    span.append(part);
  });
  return span;
}
