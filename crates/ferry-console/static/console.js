// ferry console: live lists and confirmations. No framework, no build.
"use strict";

// Elements with data-live are refreshed every few seconds from the same page, unless the
// person is typing in them or has the tab hidden.
function refreshLive() {
  const live = document.querySelectorAll("[data-live]");
  if (live.length === 0 || document.hidden) return;
  if (document.activeElement && document.activeElement.closest("[data-live] form")) return;
  fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
    .then((response) => (response.ok ? response.text() : null))
    .then((text) => {
      if (!text) return;
      const fresh = new DOMParser().parseFromString(text, "text/html");
      live.forEach((element) => {
        const replacement = fresh.getElementById(element.id);
        if (replacement) element.replaceWith(replacement);
      });
    })
    .catch(() => {});
}
setInterval(refreshLive, 5000);

document.addEventListener("submit", (event) => {
  const question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});
