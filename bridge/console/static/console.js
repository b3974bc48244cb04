// pollbridge console: the only script. It reloads a page that asks for it (data-refresh, in
// seconds) unless the operator turned auto-refresh off; everything works without it.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  var box = document.getElementById("auto-refresh");
  if (!seconds || !box) {
    return;
  }
  var key = "pollbridge-auto-refresh";
  var on = window.localStorage.getItem(key) !== "off";
  box.checked = on;
  box.parentElement.hidden = false;
  var timer = null;
  function schedule() {
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (box.checked) {
      timer = window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
    }
  }
  box.addEventListener("change", function () {
    window.localStorage.setItem(key, box.checked ? "on" : "off");
    schedule();
  });
  schedule();
})();
