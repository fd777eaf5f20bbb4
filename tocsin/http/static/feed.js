// The tocsin feed page: the token comes from the URL fragment (#token=...), which browsers never send to
// a server. Everything else is the app's own API, relative to the page (it may be mounted under a prefix).
"use strict";
(function () {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const list = document.getElementById("items");
  const badge = document.getElementById("unread");
  const more = document.getElementById("more");
  const status = document.getElementById("status");
  const shown = new Map(); // item id -> its <li>
  let cursor = null;

  function api(path, options) {
    const init = Object.assign({ headers: { Authorization: "Bearer " + token } }, options || {});
    return fetch(path, init).then(function (response) {
      if (response.status === 401) throw new Error("This link has expired: ask for a new one.");
      if (!response.ok) throw new Error("The server answered " + response.status + ".");
      return response.json();
    });
  }

  function fail(error) { status.textContent = error.message; }

  function setCounts(counts) {
    badge.textContent = String(counts.unread_count);
    badge.dataset.count = String(counts.unread_count);
    document.title = counts.unread_count ? "(" + counts.unread_count + ") Notifications" : "Notifications";
  }

  function render(item) {
    const li = shown.get(item.id) || document.createElement("li");
    const content = item.content || {};
    const title = content.title || content.subject || "Notification";
    const body = content.body || content.text || "";
    li.replaceChildren();
    for (const [cls, text] of [["title", title], ["body", body], ["when", new Date(item.created_at).toLocaleString()]]) {
      const div = document.createElement("div");
      div.className = cls;
      div.textContent = text;
      li.appendChild(div);
    }
    li.dataset.id = item.id;
    li.classList.toggle("read", item.read_at !== null);
    li.onclick = item.read_at === null ? function () { markRead(item.id); } : null;
    shown.set(item.id, li);
    return li;
  }

  function markRead(id) {
    api("v1/inbox/" + id + "/read", { method: "POST" }).then(render).then(refreshCounts).catch(fail);
  }

  function refreshCounts() {
    return api("v1/inbox?limit=1").then(setCounts);
  }

  function loadPage() {
    const query = cursor ? "&cursor=" + encodeURIComponent(cursor) : "";
    return api("v1/inbox?limit=20" + query).then(function (page) {
      for (const item of page.items) if (!shown.has(item.id)) list.appendChild(render(item));
      cursor = page.next_cursor;
      more.hidden = cursor === null;
      setCounts(page);
    });
  }

  // A new item: fetch the newest page and put what is not shown yet on top, newest first.
  function arrived() {
    return api("v1/inbox?limit=20").then(function (page) {
      const fresh = page.items.filter(function (item) { return !shown.has(item.id); });
      for (const item of fresh.reverse()) list.insertBefore(render(item), list.firstChild);
      setCounts(page);
    });
  }

  function listen() {
    const source = new EventSource("v1/inbox/stream?token=" + encodeURIComponent(token));
    source.addEventListener("item", function () { arrived().catch(fail); });
    source.addEventListener("counts", function (event) { setCounts(JSON.parse(event.data)); });
    // On every (re)connect, catch up: an item that landed before the stream was open sent no event here.
    source.addEventListener("open", function () { status.textContent = ""; arrived().catch(fail); });
    source.addEventListener("error", function () { status.textContent = "Reconnecting..."; });
  }

  if (!token) {
    status.textContent = "No token: open this page as .../#token=<token>.";
    return;
  }
  more.addEventListener("click", function () { loadPage().catch(fail); });
  document.getElementById("read-all").addEventListener("click", function () {
    api("v1/inbox/read-all", { method: "POST" })
      .then(function () {
        shown.forEach(function (li) { li.classList.add("read"); li.onclick = null; });
        return refreshCounts();
      })
      .catch(fail);
  });
  loadPage().then(listen).catch(fail);
})();
