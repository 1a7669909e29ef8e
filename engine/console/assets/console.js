// erpflow console: the token, page loading and live updates. Everything
// else is htmx attributes in the server's HTML. No eval, no inline code:
// the page's Content-Security-Policy allows scripts from this server only.
(function () {
  'use strict';
  var KEY = 'erpflow.token';
  var prefix = document.body.dataset.prefix;
  var main = document.getElementById('main');

  function token() {
    try { return sessionStorage.getItem(KEY) || ''; } catch (e) { return ''; }
  }

  // A link into the console may carry the token in its fragment
  // (…/ui/rules#token=…), which browsers never send to a server: an ERP
  // links its customers to their tenant's view this way. It moves into
  // this tab's sessionStorage and out of the address bar and history.
  function tokenFromFragment() {
    var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (!m) { return false; }
    try { sessionStorage.setItem(KEY, decodeURIComponent(m[1])); } catch (e) { return false; }
    history.replaceState(null, '', location.pathname + location.search);
    return true;
  }
  tokenFromFragment();
  window.addEventListener('hashchange', function () {
    if (tokenFromFragment()) { location.reload(); }
  });

  // Every request of htmx carries the token as a header (never a cookie).
  document.addEventListener('htmx:configRequest', function (e) {
    var t = token();
    if (t) { e.detail.headers['Authorization'] = 'Bearer ' + t; }
  });

  document.addEventListener('submit', function (e) {
    var f = e.target;
    if (f.id !== 'signin') { return; }
    e.preventDefault();
    var v = f.elements.token.value.trim();
    if (!v) { return; }
    sessionStorage.setItem(KEY, v);
    location.reload();
  });

  var signout = document.getElementById('signout');
  if (token()) { signout.hidden = false; }
  signout.addEventListener('click', function () {
    sessionStorage.removeItem(KEY);
    location.assign(prefix + '/');
  });

  // Confirmation of buttons that delete or replay: data-confirm instead of
  // hx-confirm keeps the wording in the server's HTML.
  document.addEventListener('htmx:confirm', function (e) {
    var q = e.detail.elt.getAttribute('data-confirm');
    if (q && !window.confirm(q)) { e.preventDefault(); }
  });

  // Live: an element with data-live="<stream query>" follows the attempt
  // stream; each attempt's delivery row is fetched again (data-row="<row
  // URL with {id}>") and replaces its row, or is added on top of the
  // element's tbody when it is new and the row URL answers one. With
  // data-delivery="<delivery id>" (a delivery's own page), only that
  // delivery's attempts count.
  var source = null;
  var backoff = 0; // ms before the next reload after a closed stream
  var pending = {};
  function closeLive() {
    if (source) { source.close(); source = null; }
  }
  function openLive(el) {
    closeLive();
    var q = el.getAttribute('data-live') || '';
    var only = el.getAttribute('data-delivery');
    var t = token();
    var url = prefix + '/live' + (q ? '?' + q : '');
    if (t) { url += (q ? '&' : '?') + 'access_token=' + encodeURIComponent(t); }
    source = new EventSource(url);
    var status = document.getElementById('live-status');
    var es = source;
    var opened = false;
    source.addEventListener('open', function () {
      backoff = 0;
      if (status) { status.textContent = 'Live'; status.className = 'live on'; }
      // An attempt that ended after the page was read but before the
      // stream started is in no message: the rows not final when read
      // (data-state) are read again, now that the stream follows them.
      // Only at the first open: a reconnection resumes with Last-Event-ID.
      if (opened) { return; }
      opened = true;
      el.querySelectorAll('tr[data-state]').forEach(function (r) {
        var st = r.getAttribute('data-state');
        var id = r.id.replace(/^dlv-/, '');
        if (st === 'succeeded' || st === 'dead' || pending[id]) { return; }
        pending[id] = true;
        window.setTimeout(function () { refreshRow(el, id); }, 0);
      });
    });
    source.addEventListener('error', function () {
      if (status) { status.textContent = 'Reconnecting…'; status.className = 'live off'; }
      // A network error makes the EventSource reconnect by itself (with
      // Last-Event-ID); an HTTP error (503: the server's stream limit)
      // closes it for good. Then the page's content is loaded again,
      // later and later (2 s doubling to a minute), which opens a new
      // stream and misses nothing.
      if (es.readyState !== EventSource.CLOSED || es !== source) { return; }
      backoff = Math.min(backoff ? backoff * 2 : 2000, 60000);
      window.setTimeout(function () { if (es === source) { load(); } }, backoff);
    });
    source.addEventListener('attempt', function (m) {
      var a;
      try { a = JSON.parse(m.data); } catch (err) { return; }
      if (!a.delivery_id || pending[a.delivery_id] || (only && a.delivery_id !== only)) { return; }
      pending[a.delivery_id] = true;
      window.setTimeout(function () { refreshRow(el, a.delivery_id); }, 150);
    });
  }
  function refreshRow(el, id) {
    delete pending[id];
    var tmpl = el.getAttribute('data-row');
    if (!tmpl) { return; }
    var url = tmpl.replace('{id}', encodeURIComponent(id));
    var headers = { 'HX-Request': 'true' };
    var t = token();
    if (t) { headers['Authorization'] = 'Bearer ' + t; }
    fetch(url, { headers: headers, credentials: 'omit' }).then(function (r) {
      // 204: the delivery does not (or no longer) belong on this page (it
      // left the state filtered for): its row, if shown, goes.
      if (r.status === 204) {
        ['dlv-', 'detail-'].forEach(function (p) {
          var e = document.getElementById(p + id);
          if (e && el.contains(e)) { e.remove(); }
        });
      }
      if (r.status !== 200) { return null; }
      return r.text();
    }).then(function (html) {
      if (!html) { return; }
      var tpl = document.createElement('template');
      tpl.innerHTML = html.trim();
      var rows = tpl.content.querySelectorAll('tr');
      if (!rows.length) { return; }
      var old = document.getElementById('dlv-' + id);
      var tbody = el.querySelector('tbody');
      var detail = document.getElementById('detail-' + id);
      var added = [];
      if (old) {
        // The row is replaced, its detail row (open or not) is kept: the
        // new row's expand button says whether it is open.
        var btn = rows[0].querySelector('[aria-expanded]');
        if (btn && detail && !detail.hidden) { btn.setAttribute('aria-expanded', 'true'); }
        old.replaceWith(rows[0]);
        added.push(rows[0]);
      } else if (tbody) {
        var frag = document.createDocumentFragment();
        rows.forEach(function (r) { frag.appendChild(r); added.push(r); });
        tbody.insertBefore(frag, tbody.firstChild);
        var empty = el.querySelector('.empty');
        if (empty) { empty.remove(); }
      }
      // Every added row (a new delivery's detail row too) gets its htmx
      // attributes processed.
      added.forEach(function (r) { htmx.process(r); });
      // An open attempt list is refreshed as well.
      if (detail && !detail.hidden) { htmx.trigger(detail, 'refresh'); }
    });
  }

  function afterSwap() {
    main.removeAttribute('aria-busy');
    var live = main.querySelector('[data-live]');
    if (live) { openLive(live); } else { closeLive(); }
    var h = main.querySelector('h1');
    if (h && document.activeElement === document.body) { h.setAttribute('tabindex', '-1'); }
  }
  document.addEventListener('htmx:afterSettle', function (e) {
    if (e.detail.target === main) { afterSwap(); }
  });
  window.addEventListener('pagehide', closeLive);

  function load() {
    main.setAttribute('aria-busy', 'true');
    htmx.ajax('GET', main.dataset.src, { target: main, swap: 'innerHTML' });
  }
  if (window.htmx) { load(); } else { document.addEventListener('DOMContentLoaded', load); }
})();

// --- Log History (deliveries, events, overview) ---
// A row's expand button (data-expand="<detail row id>", a real button
// with aria-expanded) shows or hides its detail row, which loads the
// delivery's payload and attempts on its htmx "refresh" event.
(function () {
  'use strict';
  document.addEventListener('click', function (e) {
    var b = e.target.closest && e.target.closest('button[data-expand]');
    if (!b) { return; }
    var d = document.getElementById(b.getAttribute('data-expand'));
    if (!d) { return; }
    var open = b.getAttribute('aria-expanded') !== 'true';
    b.setAttribute('aria-expanded', open ? 'true' : 'false');
    d.hidden = !open;
    if (open) { htmx.trigger(d, 'refresh'); }
  });
})();

// --- Rule screens (rule_edit.html): the editor's problem list. ---
(function () {
  'use strict';
  // The server's problem list says whether the editor's text is valid:
  // the editor (data-for) gets aria-invalid accordingly.
  document.addEventListener('htmx:afterSettle', function () {
    var box = document.getElementById('problems');
    if (!box) { return; }
    var ed = document.getElementById(box.getAttribute('data-for'));
    if (ed) { ed.setAttribute('aria-invalid', box.getAttribute('data-invalid') === 'true' ? 'true' : 'false'); }
  });
  // A problem's "line L, column C" button puts the cursor there.
  document.addEventListener('click', function (e) {
    var b = e.target.closest && e.target.closest('#problems button[data-line]');
    if (!b) { return; }
    var ed = document.getElementById(document.getElementById('problems').getAttribute('data-for'));
    if (!ed) { return; }
    var line = parseInt(b.getAttribute('data-line'), 10) || 1;
    var col = parseInt(b.getAttribute('data-column'), 10) || 1;
    var lines = ed.value.split('\n');
    var pos = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) { pos += lines[i].length + 1; }
    pos += Math.min(col - 1, (lines[line - 1] || '').length);
    ed.focus();
    ed.setSelectionRange(pos, pos);
  });
})();
