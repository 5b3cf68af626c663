/* /: the status page for the person who looks after this computer. Reads
   GET /v1/health with an admin token kept in this tab's sessionStorage (never a
   cookie, never localStorage), and refreshes itself. */
"use strict";

(function () {
  var el = sidecar.el, clear = sidecar.clear;
  var STORAGE_KEY = "sidecar.admin-token";
  /* Each refresh runs the daemon's health checks, one of which asks the CNS whether it
     is up: a page left open all day must not turn into a load test. Hidden tabs wait. */
  var REFRESH_SECONDS = 30;
  var timer = null;

  var GROUPS = [
    { title: "Signing keys", match: function (c) { return /^key/.test(c.name) || (c.data && c.data.keys); } },
    { title: "Timestamp and revocation services", match: function (c) { return /tsa|ocsp|crl|trust|revocation|timestamp|sandbox-pki/.test(c.name); } },
    { title: "CNS and outbox", match: function (c) { return /cns|outbox/.test(c.name); } },
    { title: "Recent errors", match: function (c) { return c.name === "errors"; } },
    { title: "Other checks", match: function () { return true; } }
  ];
  var NAMES = {
    keys: "Signing keys", tsa: "Timestamp authority (TSA)", ocsp: "OCSP responder",
    crl: "Revocation lists (CRL)", cns: "CNS connection", outbox: "Outbox to the CNS",
    "sandbox-pki": "Sandbox PKI (test certificates)"
  };
  var STATUS_WORDS = {
    ok: "Everything works.",
    degraded: "Working, but something needs attention.",
    down: "Not working: signing or forwarding is impossible right now."
  };

  /* A token arriving in the link's fragment (sidecar status --open) moves to session
     storage and leaves the address bar, the history entry and any bookmark. */
  function takeTokenFromLink() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (!match) return;
    sessionStorage.setItem(STORAGE_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function token() { return sessionStorage.getItem(STORAGE_KEY); }

  function showLogin(message) {
    if (timer) { clearTimeout(timer); timer = null; }
    document.getElementById("dashboard").hidden = true;
    document.getElementById("signout").hidden = true;
    document.getElementById("login").hidden = false;
    document.getElementById("login-error").textContent = message || "";
    document.body.setAttribute("data-ready", "login");
  }

  function human(key, value) {
    if (typeof value === "number" && /seconds$/.test(key)) {
      if (value < 90) return Math.round(value) + " s";
      if (value < 5400) return "about " + Math.round(value / 60) + " min";
      if (value < 172800) return "about " + Math.round(value / 3600) + " h";
      return "about " + Math.round(value / 86400) + " days";
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (value === null) return "—";
    return String(value);
  }

  function figureClass(key, value) {
    if (/days_to_expiry$|days_left$/.test(key) && typeof value === "number") {
      if (value < 0) return "bad";
      if (value < 30) return "warn";
    }
    if (key === "unlocked" && value === false) return "warn";
    /* Outbox messages given up on, or whose fate at the CNS is not known yet. */
    if ((key === "failed" || key === "unknown") && typeof value === "number" && value > 0) return "warn";
    return "";
  }

  function scalar(field, key, value) {
    return el("span", { class: "value " + figureClass(key, value), "data-field": field, "data-value": String(value) },
      human(key, value));
  }

  function figures(prefix, data) {
    var items = [];
    Object.keys(data).forEach(function (key) {
      var value = data[key];
      var field = prefix + "." + key;
      if (Array.isArray(value) && value.length && typeof value[0] === "object") {
        var columns = [];
        value.forEach(function (row) { Object.keys(row).forEach(function (c) { if (columns.indexOf(c) < 0) columns.push(c); }); });
        items.push(columns.length > 5 ? rowCards(key, field, value, columns) : rowTable(key, field, value, columns));
      } else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        items = items.concat(figures(field, value));
      } else {
        var shown = Array.isArray(value) ? value.join(", ") : value;
        items.push(el("div", { class: "figure" }, el("span", { class: "label", text: sidecar.words(key) }),
          scalar(field, key, shown)));
      }
    });
    return items;
  }

  /* Few columns: a table. Many (a key's certificate details): one small card per row,
     the figures a person acts on first, long texts on their own line. */
  var FIRST = ["days_to_expiry", "unlocked", "certificate_status", "status", "state", "not_after"];
  var TITLE = ["id", "name", "url"];

  function cell(field, column, value) {
    if (value === undefined) return "";
    if (value !== null && typeof value === "object") return JSON.stringify(value);
    return scalar(field, column, value);
  }

  function rowTable(key, field, rows, columns) {
    return el("div", { class: "figure wide" }, el("span", { class: "label", text: sidecar.words(key) }),
      el("table", null,
        el("thead", null, el("tr", null, columns.map(function (c) { return el("th", { text: sidecar.words(c) }); }))),
        el("tbody", null, rows.map(function (row, i) {
          return el("tr", null, columns.map(function (c) { return el("td", null, cell(field + "." + i + "." + c, c, row[c])); }));
        }))));
  }

  function rowCards(key, field, rows, columns) {
    var title = TITLE.filter(function (c) { return columns.indexOf(c) >= 0; })[0];
    var ordered = FIRST.filter(function (c) { return columns.indexOf(c) >= 0; })
      .concat(columns.filter(function (c) { return FIRST.indexOf(c) < 0; }));
    return el("div", { class: "figure wide" }, el("span", { class: "label", text: sidecar.words(key) }),
      rows.map(function (row, i) {
        var prefix = field + "." + i + ".";
        return el("div", { class: "row-card" },
          title ? el("h4", null, cell(prefix + title, title, row[title])) : null,
          el("div", { class: "figures" }, ordered.filter(function (c) { return c !== title && row[c] !== undefined; }).map(function (c) {
            var long = typeof row[c] === "string" && row[c].length > 40;
            return el("div", { class: long ? "figure wide" : "figure" },
              el("span", { class: "label", text: sidecar.words(c) }), cell(prefix + c, c, row[c]));
          })));
      }));
  }

  function errorsCard(check) {
    var recent = (check.data && check.data.recent) || [];
    return el("article", { class: "check", "data-check": check.name },
      el("h3", null, "Recent errors ", el("span", { class: "pill", text: String(recent.length) })),
      recent.length === 0 ? el("p", { class: "muted", text: check.detail }) :
        el("ol", { class: "errors" }, recent.map(function (e, i) {
          return el("li", { "data-field": "errors.recent." + i },
            el("time", { datetime: e.time, text: new Date(e.time).toLocaleString() }), " ",
            el("span", { class: "pill", text: e.area }), " ", e.message);
        })));
  }

  function checkCard(check) {
    if (check.name === "errors") return errorsCard(check);
    return el("article", { class: "check " + check.status, "data-check": check.name },
      el("h3", null, el("span", { class: "dot " + check.status, title: check.status }), " ", NAMES[check.name] || sidecar.words(check.name), " ",
        el("span", { class: "pill " + check.status, "data-field": check.name + ".status", "data-value": check.status, text: check.status })),
      check.detail ? el("p", { class: "detail", text: check.detail }) : null,
      check.data ? el("div", { class: "figures" }, figures(check.name, check.data)) : null);
  }

  function render(health) {
    document.getElementById("login").hidden = true;
    document.getElementById("dashboard").hidden = false;
    document.getElementById("signout").hidden = false;
    document.getElementById("fetch-error").textContent = "";
    document.getElementById("version").textContent = "v" + health.version;
    document.getElementById("version").setAttribute("data-value", health.version);
    var overall = document.getElementById("overall");
    overall.className = "banner " + health.status;
    overall.setAttribute("data-value", health.status);
    overall.textContent = health.status.toUpperCase() + " — " + (STATUS_WORDS[health.status] || "");
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    document.getElementById("interval").textContent = String(REFRESH_SECONDS);
    var groups = clear(document.getElementById("groups"));
    var placed = {};
    GROUPS.forEach(function (group) {
      var checks = health.checks.filter(function (c) { return !placed[c.name] && group.match(c); });
      if (!checks.length) return;
      checks.forEach(function (c) { placed[c.name] = true; });
      groups.appendChild(el("section", { class: "group" }, el("h2", { text: group.title }), checks.map(checkCard)));
    });
    document.body.setAttribute("data-ready", "true");
  }

  function load() {
    if (timer) { clearTimeout(timer); timer = null; }
    var current = token();
    if (!current) { showLogin(""); return; }
    fetch("/v1/health", { headers: { Authorization: "Bearer " + current }, cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          sessionStorage.removeItem(STORAGE_KEY);
          showLogin("This token was not accepted: mistyped, revoked, or replaced by a newer 'sidecar status --open' link.");
          return null;
        }
        return response.json().then(function (body) {
          if (!body.checks) {
            sessionStorage.removeItem(STORAGE_KEY);
            showLogin("This token has no admin scope: the page needs one that has.");
            return null;
          }
          render(body);
          return body;
        });
      })
      .catch(function () {
        document.getElementById("fetch-error").textContent =
          "The daemon does not answer (stopped or restarting?). Trying again every " + REFRESH_SECONDS + " s.";
        document.body.setAttribute("data-ready", "unreachable");
      })
      .then(function () {
        if (token() && !timer) timer = setTimeout(refresh, REFRESH_SECONDS * 1000);
      });
  }

  function refresh() {
    timer = null;
    if (document.visibilityState === "hidden") return; /* resumed by visibilitychange */
    load();
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && !timer && token()) load();
  });

  document.getElementById("login-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("token");
    var value = input.value.trim();
    input.value = "";
    if (!value) return;
    sessionStorage.setItem(STORAGE_KEY, value);
    load();
  });
  document.getElementById("signout").addEventListener("click", function () {
    sessionStorage.removeItem(STORAGE_KEY);
    showLogin("");
  });

  takeTokenFromLink();
  load();
})();
