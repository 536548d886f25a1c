// tallykey console: copy buttons and the long-expiry warning. Loaded from /console/static
// (the Content-Security-Policy allows no inline script). Every page works without it.
"use strict";

function copyFrom(button) {
  var source = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById("copy-status");
  if (!source) { return; }
  var done = function () {
    button.textContent = "Copied";
    if (status) { status.textContent = "Copied to the clipboard."; }
    window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
  };
  source.focus();
  source.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(source.value).then(done, function () {
      if (status) { status.textContent = "Press Ctrl+C (or Cmd+C) to copy the selected text."; }
    });
  } else if (document.execCommand && document.execCommand("copy")) {
    done();
  } else if (status) {
    status.textContent = "Press Ctrl+C (or Cmd+C) to copy the selected text.";
  }
}

function chosenDays(form) {
  var checked = form.querySelector("input[name=expiry]:checked");
  if (!checked) { return 0; }
  if (checked.value !== "date") { return parseInt(checked.getAttribute("data-days"), 10); }
  var picker = document.getElementById("expires_on");
  if (!picker || !picker.value) { return 0; }
  var today = new Date(picker.getAttribute("data-today") + "T00:00:00Z");
  var chosen = new Date(picker.value + "T00:00:00Z");
  return Math.round((chosen - today) / 86400000) + 1;
}

function watchExpiry() {
  var warning = document.getElementById("long-expiry-warning");
  var fieldset = document.getElementById("expiry");
  if (!warning || !fieldset) { return; }
  var limit = parseInt(warning.getAttribute("data-warn-days"), 10);
  var form = fieldset.form || fieldset.closest("form");
  var update = function () { warning.hidden = !(chosenDays(form) > limit); };
  fieldset.addEventListener("change", function (event) {
    if (event.target && event.target.id === "expires_on") {
      document.getElementById("expiry-date-choice").checked = true;
    }
    update();
  });
  update();
}

// A create or rotate form is sent once, even on a double click (the server also answers
// a repeated form with the first result: see tokens/idempotency.py).
function submitOnce(form) {
  form.addEventListener("submit", function (event) {
    if (form.getAttribute("data-submitted")) { event.preventDefault(); return; }
    form.setAttribute("data-submitted", "true");
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.setAttribute("aria-disabled", "true");
    });
  });
  window.addEventListener("pageshow", function () {
    form.removeAttribute("data-submitted");
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.removeAttribute("aria-disabled");
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-submit-once]").forEach(submitOnce);
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () { copyFrom(button); });
  });
  watchExpiry();
});
