// gatekeeper sign-in page: follow the challenge's status without a reload loop. The page
// works without this script (the "continue" link reloads it); with it, the page reloads
// itself once the status is no longer "pending" (confirmed: the reload redirects to the
// service; expired: the reload says so).
(function () {
  "use strict";
  var el = document.getElementById("gk-status");
  if (!el || !window.fetch) {
    return;
  }
  var url = el.getAttribute("data-status-url");
  var delay = 3000;
  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : { status: "error" }; })
      .then(function (body) {
        if (body.status === "pending") {
          window.setTimeout(poll, delay);
        } else if (body.status === "confirmed" || body.status === "expired" || body.status === "finished") {
          window.location.reload();
        }
      })
      .catch(function () { window.setTimeout(poll, delay * 2); });
  }
  window.setTimeout(poll, delay);
})();
