// After a failed submit, move focus to the error summary so keyboard and screen-reader users land on it.
// Metadata source radios: only the chosen input is shown (the server also takes the one that was filled).
document.addEventListener("DOMContentLoaded", function () {
  var summary = document.querySelector(".error-summary");
  if (summary) { summary.focus(); }
  var choice = document.querySelector("[data-source-choice]");
  if (!choice) { return; }
  var sync = function () {
    var picked = choice.querySelector("input[name=source]:checked");
    document.querySelectorAll("[data-source]").forEach(function (panel) {
      var shown = !picked || panel.getAttribute("data-source") === picked.value;
      panel.hidden = !shown;
      panel.querySelectorAll("input").forEach(function (input) { input.disabled = !shown; });
    });
  };
  choice.addEventListener("change", sync);
  sync();
});
