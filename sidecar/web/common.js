/* Shared helpers of sidecar's own pages. Plain ES2017, no library, no network but
   the daemon itself. Elements are built with el(), never from HTML strings, so that
   nothing the daemon reports can inject markup. */
"use strict";

var sidecar = (function () {
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === null || value === undefined || value === false) return;
        if (name === "text") node.textContent = String(value);
        else if (name === "class") node.className = value;
        else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
        else node.setAttribute(name, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function words(name) {
    return String(name).replace(/_/g, " ").replace(/-/g, " ");
  }

  function copyButton(getText) {
    var button = el("button", { type: "button", class: "copy", text: "Copy" });
    button.addEventListener("click", function () {
      var text = getText();
      function done(ok) {
        button.textContent = ok ? "Copied" : "Select and copy";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      } else {
        done(false);
      }
    });
    return button;
  }

  /* The reader's language: /assets/messages.js (served in the language the daemon chose
     from [ui] language or Accept-Language) defines sidecarMessages; a page without it
     is English. */
  var catalog = (typeof sidecarMessages !== "undefined" && sidecarMessages) || { language: "en", messages: {} };
  var LOCALES = { en: "en-GB", fr: "fr-LU", de: "de-LU" };
  var locale = LOCALES[catalog.language] || "en-GB";

  function fill(text, params) {
    return String(text).replace(/\{(\w+)\}/g, function (whole, name) {
      return params && params[name] !== undefined ? String(params[name]) : whole;
    });
  }

  /* gettext: the English text is the message id; {name} placeholders are filled. */
  function _(text, params) {
    var found = catalog.messages[text];
    return fill(typeof found === "string" && found ? found : text, params);
  }

  function ngettext(singular, plural, n, params) {
    var forms = catalog.messages[singular];
    var one = new Intl.PluralRules(locale).select(n) === "one";
    var text = Array.isArray(forms) && forms[one ? 0 : 1] ? forms[one ? 0 : 1] : (n === 1 ? singular : plural);
    var all = { n: number(n) };
    Object.keys(params || {}).forEach(function (k) { all[k] = params[k]; });
    return fill(text, all);
  }

  function number(n) { return new Intl.NumberFormat(locale).format(n); }

  /* 29/11/2029 (fr, en), 29.11.2029 (de): dates as Luxembourg writes them. */
  function date(value) {
    return new Intl.DateTimeFormat(locale, { day: "2-digit", month: "2-digit", year: "numeric" }).format(new Date(value));
  }

  function time(value) {
    return new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit" }).format(new Date(value));
  }

  function dateTime(value) { return date(value) + " " + time(value); }

  var UNITS = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];

  /* "dans 3 ans", "vor 4 Minuten": seconds from now (negative: past), in words. */
  function relative(seconds) {
    var format = new Intl.RelativeTimeFormat(locale, { numeric: "auto" });
    for (var i = 0; i < UNITS.length; i++) {
      if (Math.abs(seconds) >= UNITS[i][1] || i === UNITS.length - 1) {
        return format.format(Math.round(seconds / UNITS[i][1]), UNITS[i][0]);
      }
    }
    return "";
  }

  /* "4 min", "3 h": a length of time, short. */
  function duration(seconds) {
    for (var i = 0; i < UNITS.length; i++) {
      if (seconds >= UNITS[i][1] || i === UNITS.length - 1) {
        return new Intl.NumberFormat(locale, { style: "unit", unit: UNITS[i][0], unitDisplay: "short" })
          .format(Math.round(seconds / UNITS[i][1]));
      }
    }
    return "";
  }

  return {
    el: el, append: append, clear: clear, words: words, copyButton: copyButton,
    language: catalog.language, _: _, ngettext: ngettext, number: number, date: date,
    time: time, dateTime: dateTime, relative: relative, duration: duration
  };
})();
