// Forms and messages of the admin, on top of what works without JavaScript
// (views/focus.go): after a failed submission (a full page or an htmx swap)
// the first field in error gets the focus, the error summary's links follow
// the document order and the fields' labels, and following a link focuses
// its field. Flash messages become a toast in the corner of the viewport
// (#flash is aria-live, so a swapped-in message is announced) with a close
// button. Loaded by every page; the Content-Security-Policy allows no inline
// script.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  // fieldOf is the element a summary link points to: the input with the
  // field's id, or the message of a field without one input (a list of rows).
  function fieldOf(link) {
    var id = link.getAttribute("data-field");
    return document.getElementById(id) || document.getElementById(id + "-error");
  }

  function labelOf(el) {
    if (el.getAttribute("aria-label")) {
      return el.getAttribute("aria-label");
    }
    var label = el.id ? document.querySelector('label[for="' + CSS.escape(el.id) + '"]') : null;
    if (!label) {
      return "";
    }
    // The label's own text, without the input, the message or the help.
    var text = "";
    label.childNodes.forEach(function (n) {
      if (n.nodeType === Node.TEXT_NODE) {
        text += n.textContent;
      }
    });
    return text.trim();
  }

  function focusField(el) {
    if (!el) {
      return;
    }
    if (!el.matches("input, select, textarea, button, [tabindex]")) {
      el.setAttribute("tabindex", "-1");
    }
    el.focus({ preventScroll: true });
    (el.closest("label") || el).scrollIntoView({ block: "center" });
  }

  function enhanceSummary(summary) {
    var list = summary.querySelector("ul");
    if (!list) {
      return;
    }
    var items = Array.prototype.slice.call(list.children);
    items.forEach(function (li) {
      var link = li.querySelector("a[data-field]");
      var el = link && fieldOf(link);
      var name = el && labelOf(el);
      var slot = link && link.querySelector(".error-summary-field");
      if (name && slot) {
        slot.textContent = name;
      }
      li._field = el;
    });
    items.sort(function (a, b) {
      if (!a._field || !b._field) {
        return (a._field ? 0 : 1) - (b._field ? 0 : 1);
      }
      return a._field.compareDocumentPosition(b._field) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
    });
    items.forEach(function (li) {
      list.appendChild(li);
    });
  }

  // enhance handles the forms in root (the document, or swapped content).
  function enhance(root) {
    var summaries = root.querySelectorAll ? root.querySelectorAll("[data-error-summary]") : [];
    summaries.forEach(enhanceSummary);
    if (summaries.length > 0) {
      var scope = summaries[0].closest("form") || root;
      var first = scope.querySelector('[aria-invalid="true"]');
      if (first && document.activeElement !== first) {
        focusField(first);
      }
    }
    var flashes = root.querySelectorAll ? root.querySelectorAll("#flash .flash") : [];
    if (root.matches && root.matches("#flash .flash")) {
      flashes = [root];
    }
    flashes.forEach(addClose);
  }

  function addClose(flash) {
    if (flash.querySelector(".flash-close")) {
      return;
    }
    var b = document.createElement("button");
    b.type = "button";
    b.className = "flash-close";
    b.setAttribute("aria-label", "Dismiss message");
    b.textContent = "×";
    flash.appendChild(b);
  }

  document.addEventListener("click", function (ev) {
    var link = ev.target.closest && ev.target.closest("[data-error-summary] a[data-field]");
    if (link) {
      var el = fieldOf(link);
      if (el) {
        ev.preventDefault();
        focusField(el);
      }
      return;
    }
    var close = ev.target.closest && ev.target.closest(".flash-close");
    if (close) {
      close.closest(".flash").remove();
    }
  });

  document.addEventListener("htmx:afterSettle", function (ev) {
    enhance(ev.detail.elt || document);
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      enhance(document);
    });
  } else {
    enhance(document);
  }
})();
