// Tabs and copy buttons of the agent install commands.
//
// A [data-tabs] element holds a [role=tablist] of [role=tab] buttons
// (aria-controls names the panel) and the [role=tabpanel] sections; without
// this script the tab list stays hidden and every panel shows. A button with
// data-copy="<id>" copies that element's text to the clipboard. Listeners are
// delegated to the document, so content swapped in by htmx works too.
(function () {
  "use strict";
  if (window.nxmeshOnboard) {
    window.nxmeshOnboard.init(document);
    return;
  }

  function select(tabs, tab) {
    tabs.querySelectorAll('[role="tab"]').forEach(function (t) {
      var on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.classList.toggle("secondary", !on);
      var panel = document.getElementById(t.getAttribute("aria-controls"));
      if (panel) {
        panel.hidden = !on;
      }
    });
  }

  function init(root) {
    root.querySelectorAll("[data-tabs]").forEach(function (tabs) {
      if (tabs.dataset.tabsReady) {
        return;
      }
      tabs.dataset.tabsReady = "1";
      var list = tabs.querySelector('[role="tablist"]');
      if (!list) {
        return;
      }
      list.hidden = false;
      tabs.classList.add("tabs-on");
      var first = tabs.querySelector('[role="tab"][aria-selected="true"]') || tabs.querySelector('[role="tab"]');
      if (first) {
        select(tabs, first);
      }
    });
  }

  function copyText(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(fallback(text)); });
      return;
    }
    done(fallback(text));
  }

  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "copy-buffer";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok;
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target instanceof Element ? ev.target : null;
    if (!target) {
      return;
    }
    var tab = target.closest('[data-tabs] [role="tab"]');
    if (tab) {
      select(tab.closest("[data-tabs]"), tab);
      return;
    }
    var btn = target.closest("button[data-copy]");
    if (!btn) {
      return;
    }
    var src = document.getElementById(btn.dataset.copy);
    if (!src) {
      return;
    }
    var label = btn.dataset.label || btn.textContent;
    btn.dataset.label = label;
    copyText(src.textContent, function (ok) {
      btn.textContent = ok ? "Copied" : "Select and copy";
      window.setTimeout(function () { btn.textContent = label; }, 2000);
    });
  });

  document.addEventListener("htmx:afterSettle", function (ev) { init(ev.target); });
  window.nxmeshOnboard = { init: init };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
})();
