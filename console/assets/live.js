// The live feed: long-polls /console/api/feed and prepends each batch.
// Every value goes through textContent, never innerHTML: event data is
// untrusted input.
(function () {
  "use strict";
  var list = document.getElementById("live");
  if (!list) { return; }
  var empty = document.getElementById("live-empty");
  var status = document.getElementById("status");
  var feed = list.dataset.feed || "_all";
  var tenant = list.dataset.tenant || "";
  var since = "recent";
  var keep = 200;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function entryView(x, fresh) {
    var li = el("li", "entry" + (fresh ? " fresh" : ""));
    li.dataset.sequence = String(x.sequence);
    var head = el("div", "batch-head");
    head.appendChild(el("span", "seq", "#" + x.sequence));
    var link = el("a", "mono");
    link.textContent = x.type + " " + x.id + (x.version ? " v" + x.version : "");
    link.href = "/console/aggregates/" + encodeURIComponent(x.type) + "/" + encodeURIComponent(x.id) +
      (tenant ? "?tenant=" + encodeURIComponent(tenant) : "");
    head.appendChild(link);
    head.appendChild(el("span", "time", x.stored));
    li.appendChild(head);
    x.events.forEach(function (ev) {
      var d = el("details", "event");
      var s = el("summary");
      s.appendChild(el("span", "etype", ev.type));
      s.appendChild(document.createTextNode(" "));
      s.appendChild(el("span", "eid mono", ev.id));
      d.appendChild(s);
      d.appendChild(ev.data ? el("pre", "data", ev.data) : el("p", "muted", "no data"));
      li.appendChild(d);
    });
    return li;
  }

  function show(entries, fresh) {
    entries.forEach(function (x) {
      list.insertBefore(entryView(x, fresh), list.firstChild);
    });
    while (list.children.length > keep) { list.removeChild(list.lastChild); }
    if (list.children.length > 0 && empty) { empty.hidden = true; }
  }

  function poll() {
    var url = "/console/api/feed?feed=" + encodeURIComponent(feed) + "&since=" + encodeURIComponent(since) +
      (tenant ? "&tenant=" + encodeURIComponent(tenant) : "");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/console/login"; throw new Error("signed out"); }
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      })
      .then(function (res) {
        if (!res.ok) { throw new Error(res.body.error || "feed error"); }
        var first = since === "recent";
        show(res.body.entries, !first);
        since = String(res.body.next);
        status.textContent = "live";
        status.className = "status live-on";
        list.dataset.next = since;
        poll();
      })
      .catch(function (err) {
        status.textContent = "reconnecting: " + err.message;
        status.className = "status";
        setTimeout(poll, 2000);
      });
  }
  poll();
})();
