// Forward to Medallion after a short countdown, unless the person chooses to stay (to scan
// the QR code with their phone instead). Browsers without JavaScript use the meta refresh.
(function () {
  "use strict";
  var link = document.getElementById("medallion-link");
  var note = document.getElementById("forward-note");
  var text = document.getElementById("forward-text");
  var stop = document.getElementById("forward-stop");
  if (!link || !note) {
    return;
  }
  var left = Math.max(1, Number(link.dataset.forwardSeconds) || 5);
  var timer = null;

  function tick() {
    if (left <= 0) {
      window.location.assign(link.href);
      return;
    }
    text.textContent = "Taking you there in " + left + " second" + (left === 1 ? "" : "s") + ".";
    left -= 1;
    timer = window.setTimeout(tick, 1000);
  }

  stop.addEventListener("click", function () {
    window.clearTimeout(timer);
    text.textContent = "We'll wait here. Use the button or the code when you're ready.";
    stop.hidden = true;
  });

  // Coming back with the Back button shows the page again without forwarding once more.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      window.clearTimeout(timer);
      note.hidden = true;
    }
  });

  note.hidden = false;
  tick();
})();
