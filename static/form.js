// Move focus to the error summary after a failed submit, so keyboard and screen-reader
// users land on the list of fields to fix; its links jump to each field.
(function () {
  "use strict";
  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
  }
})();
