// Poll the status JSON until the verification is decided, backing off while nothing changes.
(function () {
  "use strict";
  var section = document.getElementById("status");
  if (!section || section.dataset.terminal === "true") {
    return;
  }
  var url = section.dataset.pollUrl;
  var base = Math.max(1, Number(section.dataset.pollSeconds) || 3) * 1000;
  var maxDelay = 60000;
  var delay = base;
  var etag = null;
  var title = document.getElementById("status-title");
  var detail = document.getElementById("status-detail");
  var next = document.getElementById("continue");

  function showTimeline(looks) {
    var items = document.querySelectorAll("#timeline li");
    items.forEach(function (item, index) {
      item.className = looks[index] || "todo";
      if (looks[index] === "current") {
        item.setAttribute("aria-current", "step");
      } else {
        item.removeAttribute("aria-current");
      }
    });
  }

  function show(data) {
    section.className = "status status-" + data.state;
    title.textContent = data.title;
    // The tab says the state too, as base.html's <title> does on a fresh load.
    document.title = data.title + " \u00b7 " + section.dataset.siteName;
    detail.textContent = data.detail;
    showTimeline(data.timeline || []);
    next.hidden = !data.can_continue;
    if (data.terminal) {
      var note = document.getElementById("updates-note");
      if (note) {
        note.hidden = true;
      }
    }
  }

  function schedule(changed) {
    delay = changed ? base : Math.min(delay * 1.5, maxDelay);
    window.setTimeout(poll, delay);
  }

  function poll() {
    var headers = { Accept: "application/json" };
    if (etag) {
      headers["If-None-Match"] = etag;
    }
    fetch(url, { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 304) {
          return schedule(false);
        }
        if (!response.ok) {
          // Expired or revoked links stop polling; a reload shows the explanation.
          if (response.status === 404 || response.status === 410) {
            return window.location.reload();
          }
          return schedule(false);
        }
        etag = response.headers.get("ETag");
        return response.json().then(function (data) {
          show(data);
          if (!data.terminal) {
            schedule(true);
          }
        });
      })
      .catch(function () {
        schedule(false);
      });
  }

  window.setTimeout(poll, base);
})();
