// An accessible combobox (WAI-ARIA 1.2 list autocomplete) for the user e-mail filter.

import { debounce, h, setChildren } from "./dom.js";

/**
 * attach(input, listbox, {minChars, fetch(prefix, signal) -> Promise<string[]>, onPick(value)})
 * Suggestions appear after `minChars` characters; ArrowUp/Down move, Enter picks (or commits the typed
 * value), Escape closes.
 */
export function attachAutocomplete(input, listbox, { minChars = 2, fetch, onPick }) {
  let items = [];
  let active = -1;
  let ctrl = null;

  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", listbox.id);
  input.setAttribute("aria-expanded", "false");
  listbox.setAttribute("role", "listbox");

  const close = () => {
    listbox.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  };
  const highlight = (i) => {
    active = i;
    [...listbox.children].forEach((el, j) => el.setAttribute("aria-selected", j === i ? "true" : "false"));
    if (i >= 0 && listbox.children[i]) {
      input.setAttribute("aria-activedescendant", listbox.children[i].id);
      listbox.children[i].scrollIntoView({ block: "nearest" });
    } else input.removeAttribute("aria-activedescendant");
  };
  const pick = (value) => {
    close();
    input.value = value;
    onPick(value);
  };
  const show = (list, prefix) => {
    items = list;
    if (!list.length) {
      setChildren(listbox, h("li.ac-empty", { role: "presentation" }, `No users starting with “${prefix}”`));
    } else {
      setChildren(
        listbox,
        list.map((v, i) =>
          h(
            "li.ac-option",
            {
              id: `${listbox.id}-opt-${i}`,
              role: "option",
              "aria-selected": "false",
              // mousedown (not click) so the input keeps focus and blur does not close the list first
              onmousedown: (e) => {
                e.preventDefault();
                pick(v);
              },
            },
            highlightPrefix(v, prefix),
          ),
        ),
      );
    }
    listbox.hidden = false;
    input.setAttribute("aria-expanded", "true");
    active = -1;
  };

  const lookup = debounce(async () => {
    const prefix = input.value.trim();
    if (prefix.length < minChars) return close();
    if (ctrl) ctrl.abort();
    ctrl = new AbortController();
    try {
      const list = await fetch(prefix, ctrl.signal);
      if (input.value.trim() === prefix && document.activeElement === input) show(list, prefix);
    } catch (err) {
      if (!err || err.name !== "AbortError") close();
    }
  }, 180);

  input.addEventListener("input", lookup);
  input.addEventListener("keydown", (e) => {
    const open = !listbox.hidden && items.length;
    if (e.key === "ArrowDown" && open) {
      e.preventDefault();
      highlight((active + 1) % items.length);
    } else if (e.key === "ArrowUp" && open) {
      e.preventDefault();
      highlight(active <= 0 ? items.length - 1 : active - 1);
    } else if (e.key === "Enter") {
      e.preventDefault();
      if (open && active >= 0) pick(items[active]);
      else {
        lookup.cancel();
        pick(input.value.trim());
      }
    } else if (e.key === "Escape") {
      if (!listbox.hidden) {
        e.preventDefault();
        close();
      }
    }
  });
  input.addEventListener("blur", () => setTimeout(close, 120));
  return { close };
}

function highlightPrefix(value, prefix) {
  const i = value.toLowerCase().indexOf(prefix.toLowerCase());
  if (i < 0) return value;
  return [value.slice(0, i), h("mark", value.slice(i, i + prefix.length)), value.slice(i + prefix.length)];
}
