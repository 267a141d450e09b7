// Refresh the dashboard's counts per state on a timer, without reloading the page.
(function () {
  "use strict";
  var list = document.getElementById("state-counts");
  if (!list || !window.fetch) {
    return;
  }
  var url = list.dataset.url;
  var delay = Math.max(5, Number(list.dataset.refreshSeconds) || 15) * 1000;
  var etag = null;
  var stamp = document.getElementById("counts-updated");

  function setText(element, value) {
    var text = Number(value).toLocaleString("en-US");
    if (element && element.textContent !== text) {
      element.textContent = text;
    }
  }

  function show(data) {
    Object.keys(data.counts || {}).forEach(function (state) {
      setText(list.querySelector('[data-state="' + state + '"]'), data.counts[state]);
    });
    setText(list.querySelector("[data-total]"), data.total);
    if (stamp) {
      stamp.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
    }
  }

  function poll() {
    // A hidden tab skips its turn; the next visible one catches up.
    if (document.hidden) {
      window.setTimeout(poll, delay);
      return;
    }
    var headers = { Accept: "application/json" };
    if (etag) {
      headers["If-None-Match"] = etag;
    }
    fetch(url, { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        // Signed out (redirected to the login page): stop; a reload shows why.
        if (response.redirected) {
          return false;
        }
        if (response.ok) {
          etag = response.headers.get("ETag");
          return response.json().then(show);
        }
        return null;
      })
      .catch(function () {
        return null;
      })
      .then(function (carryOn) {
        if (carryOn !== false) {
          window.setTimeout(poll, delay);
        }
      });
  }

  window.setTimeout(poll, delay);
})();
