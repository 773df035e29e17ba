// The agent picker of the virtual host and stream forms: each
// [data-target-agent] checkbox of a [data-target-picker="<input id>"]
// fieldset adds or removes its agent id in that input (comma-separated) and
// selects "Listed agents"; [data-target-filter] hides the agents whose
// data-search text lacks every typed word. Listeners are delegated to the
// document, so pickers swapped in by htmx work too.
(function () {
  "use strict";
  if (window.nxmeshTargets) {
    return;
  }
  window.nxmeshTargets = true;

  function ids(input) {
    return input.value.split(/[\s,]+/).filter(function (s) { return s !== ""; });
  }

  document.addEventListener("change", function (ev) {
    var box = ev.target;
    if (!(box instanceof HTMLInputElement) || !box.matches("[data-target-agent]")) {
      return;
    }
    var picker = box.closest("[data-target-picker]");
    var input = picker && document.getElementById(picker.dataset.targetPicker);
    if (!input) {
      return;
    }
    var list = ids(input).filter(function (id) { return id.toLowerCase() !== box.value.toLowerCase(); });
    if (box.checked) {
      list.push(box.value);
    }
    input.value = list.join(", ");
    var type = input.form && input.form.elements.namedItem("target_agents.type");
    if (type && box.checked && "value" in type) {
      type.value = "agents";
    }
  });

  document.addEventListener("input", function (ev) {
    var filter = ev.target;
    if (!(filter instanceof HTMLInputElement) || !filter.matches("[data-target-filter]")) {
      return;
    }
    var words = filter.value.toLowerCase().split(/\s+/).filter(function (s) { return s !== ""; });
    var picker = filter.closest("[data-target-picker]");
    picker.querySelectorAll("li[data-search]").forEach(function (li) {
      var text = li.dataset.search;
      li.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
    });
  });
})();
