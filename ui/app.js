// signpost's web dashboard (CONTRACT §7). Plain JavaScript, no framework, no build step: this
// file is served as written, from the binary.
//
// Two pages share one shell: the overview (/ui/) and a service (/ui/services/{service}).
// Each reads the /v1 API and then follows it with long-polls (?index=N&wait=30s): a request
// returns as soon as the registry changes, so a change shows within a moment and nothing
// polls on a timer. The token the operator enters is kept in sessionStorage (this tab's
// session only) and sent as a bearer token with every request the page makes.
//
// Everything shown is built with textContent and createElement, never innerHTML: instance
// data (tags, check output, maintenance reasons) is untrusted.
'use strict';

(() => {
  const TOKEN_KEY = 'signpost.token';
  // How long the server holds a long-poll; the client gives up a while after that.
  const WAIT_SECONDS = 30;
  const CLIENT_TIMEOUT_MS = (WAIT_SECONDS + 15) * 1000;
  const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  const STATUSES = ['passing', 'warning', 'critical', 'maintenance'];

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    config: null, // GET /ui/config.json
    page: null, // AbortController of the running page
  };

  // ---- DOM helpers --------------------------------------------------------------------

  /** An element with attributes (`class`, `data-*`, properties) and children. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'for') {
        e.setAttribute(k, v === true ? '' : String(v));
      } else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e[k] = v;
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function notice(text, kind) {
    const n = $('notice');
    n.textContent = text;
    n.dataset.kind = kind || 'info';
    n.hidden = false;
    clearTimeout(notice.timer);
    notice.timer = setTimeout(() => { n.hidden = true; }, kind === 'error' ? 10000 : 4000);
  }

  function setLive(which, detail) {
    const l = $('live');
    l.dataset.state = which;
    l.textContent = {
      live: 'live', offline: 'reconnecting…', connecting: 'connecting…', locked: 'token needed', paused: 'paused',
    }[which];
    l.title = detail || 'Follows the registry through long-polls';
  }

  // ---- time ---------------------------------------------------------------------------

  function relative(date) {
    const s = Math.round((Date.now() - date.getTime()) / 1000);
    const ago = (n, unit) => `${n} ${unit}${n === 1 ? '' : 's'} ago`;
    if (s < 5) return 'just now';
    if (s < 60) return ago(s, 'second');
    if (s < 3600) return ago(Math.floor(s / 60), 'minute');
    if (s < 86400) return ago(Math.floor(s / 3600), 'hour');
    return ago(Math.floor(s / 86400), 'day');
  }

  function absolute(date) {
    const p = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())} ` +
      `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
  }

  /** "3 minutes ago" over the local date and time; both kept current by `tick`. */
  function when(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return el('span', {}, iso || '');
    return el('span', { class: 'when' },
      el('time', { dateTime: iso, title: d.toString(), 'data-rel': iso }, relative(d)),
      el('small', {}, absolute(d)));
  }

  // Relative times age without any request: rewritten from the clock every few seconds.
  setInterval(() => {
    for (const t of document.querySelectorAll('time[data-rel]')) {
      t.textContent = relative(new Date(t.dataset.rel));
    }
  }, 5000);

  // ---- the API ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  /** One request with the token; resolves to {data, index} or throws ApiError. */
  async function api(method, path, body, signal) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, {
        method, headers, signal, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (signal && signal.aborted) throw e;
      throw new ApiError(0, `cannot reach the server (${e.message})`);
    }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!r.ok) {
      const message = (data && typeof data.error === 'string') ? data.error : `${r.status} ${r.statusText}`;
      throw new ApiError(r.status, message, Number(r.headers.get('Retry-After')) || 0);
    }
    return { data, index: r.headers.get('X-Signpost-Index') };
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });

  const hidden = () => document.visibilityState === 'hidden';

  /** Resolves once the tab is shown (at once if it is), or `signal` aborts. */
  const shown = (signal) => new Promise((resolve) => {
    if (!hidden()) { resolve(); return; }
    const done = () => {
      if (hidden() && !signal.aborted) return;
      document.removeEventListener('visibilitychange', done);
      resolve();
    };
    document.addEventListener('visibilitychange', done);
    signal.addEventListener('abort', done, { once: true });
  });

  /**
   * Follows `path`: reads it, hands each new body to `show`, and asks again with the index
   * it got, which the server holds until something changed. Stops when `signal` aborts; on
   * 401 asks for a token; on other 4xx shows the API's message; retries network failures.
   *
   * A tab in the background drops its long-poll and asks again, with the index it had, when
   * shown: browsers open at most six connections to one server, and every open tab of the
   * dashboard would otherwise hold one.
   */
  async function follow(path, show, signal) {
    let index = null;
    let failures = 0;
    while (!signal.aborted) {
      if (hidden()) {
        setLive('paused');
        await shown(signal);
        if (signal.aborted) return;
      }
      const sep = path.includes('?') ? '&' : '?';
      const url = index === null ? path : `${path}${sep}index=${encodeURIComponent(index)}&wait=${WAIT_SECONDS}s`;
      // A long-poll that hangs beyond the server's wait (a dead connection) is given up;
      // one whose tab goes to the background is dropped.
      const mine = new AbortController();
      const onAbort = () => mine.abort();
      const onHide = () => { if (hidden()) mine.abort(); };
      signal.addEventListener('abort', onAbort, { once: true });
      document.addEventListener('visibilitychange', onHide);
      const timer = setTimeout(() => mine.abort(), CLIENT_TIMEOUT_MS);
      try {
        const { data, index: next } = await api('GET', url, undefined, mine.signal);
        failures = 0;
        setLive('live');
        if (next !== index || index === null) show(data);
        index = next;
        // Without an index (a proxy dropped the header) there is nothing to wait on: ask
        // again after a pause rather than at once.
        if (next === null) await sleep(5000, signal);
      } catch (e) {
        if (signal.aborted) return;
        if (hidden() && mine.signal.aborted) continue;
        if (e.status === 401) {
          locked(e.message);
          return;
        }
        if (e.status >= 400 && e.status < 500) {
          setLive('live');
          show(null, e);
          return;
        }
        failures += 1;
        setLive('offline', e.message || 'the long-poll was given up');
        const backoff = Math.min(500 * 2 ** (failures - 1), 10000);
        await sleep(Math.max(backoff, (e.retryAfter || 0) * 1000), signal);
        // After a failure the next read is a plain one: whatever was missed shows at once.
        index = null;
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        document.removeEventListener('visibilitychange', onHide);
      }
    }
  }

  // ---- the token ----------------------------------------------------------------------

  function canWrite() {
    return Boolean(state.config && state.config.write);
  }

  function showAccess() {
    const a = $('access');
    $('token-forget').hidden = !state.token;
    $('token-input').placeholder = state.token ? 'token entered (hidden)' : 'bearer token';
    if (!state.config) {
      a.textContent = '';
      a.dataset.access = 'none';
      return;
    }
    if (canWrite()) {
      a.textContent = 'can change';
      a.dataset.access = 'write';
      a.title = state.token ? 'The token entered may write' : 'This server takes writes without a token';
    } else {
      a.textContent = 'read-only';
      a.dataset.access = 'read';
      a.title = state.token
        ? 'The token entered may only read: enter the write token to act'
        : 'Enter the write token to put instances in maintenance or deregister them';
    }
  }

  function locked(message) {
    setLive('locked', message);
    state.config = null;
    showAccess();
    const main = $('main');
    main.replaceChildren(el('section', { class: 'locked' },
      el('h1', {}, 'A token is needed'),
      el('p', {}, state.token
        ? 'The token entered was refused. Enter the read or write token of this server above.'
        : 'This server needs a token to read its registry (http.read_token). Enter it above: it is kept in this tab only.'),
      el('p', { class: 'muted' }, message)));
    $('token-input').focus();
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('token-input').value.trim();
    $('token-input').value = '';
    if (!v) return;
    state.token = v;
    sessionStorage.setItem(TOKEN_KEY, v);
    start();
  });

  $('token-forget').addEventListener('click', () => {
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    start();
  });

  // ---- dialogs ------------------------------------------------------------------------

  // The open dialog's answer. Settled from the form's submit (which button) or the dialog's
  // cancel (Escape), synchronously: a dialog's `close` event comes later, after the next
  // dialog may already be open, so it would answer the wrong question.
  let answer = null;

  function settle(value) {
    const resolve = answer;
    answer = null;
    if (resolve) resolve(value);
  }

  $('dialog-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    // Enter in the reason field submits with the first button: OK.
    const ok = Boolean(ev.submitter && ev.submitter.value === 'ok');
    const reason = $('dialog-reason').value.trim();
    $('dialog').close();
    settle(ok ? reason : null);
  });
  $('dialog').addEventListener('cancel', () => settle(null));

  /** Asks in the page's own dialog; resolves to the reason typed (or '') or null if cancelled. */
  function ask({ title, text, ok, danger, reason }) {
    settle(null);
    const d = $('dialog');
    $('dialog-title').textContent = title;
    $('dialog-text').textContent = text;
    $('dialog-ok').textContent = ok;
    $('dialog-ok').classList.toggle('danger', Boolean(danger));
    $('dialog-reason').hidden = !reason;
    $('dialog-reason-label').hidden = !reason;
    $('dialog-reason').value = '';
    return new Promise((resolve) => {
      answer = resolve;
      if (!d.open) d.showModal();
      (reason ? $('dialog-reason') : $('dialog-cancel')).focus();
    });
  }

  // ---- actions ------------------------------------------------------------------------

  const instancePath = (service, id) =>
    `/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}`;

  async function act(what, method, path, body) {
    try {
      await api(method, path, body);
      notice(what, 'ok');
    } catch (e) {
      notice(`${what} failed: ${e.message}`, 'error');
    }
  }

  async function maintenance(service, inst, enable) {
    if (enable) {
      const reason = await ask({
        title: `Maintenance for ${inst.id}`,
        text: `${inst.id} (${inst.address}:${inst.port}) leaves DNS answers until maintenance is turned off, whatever its checks say.`,
        ok: 'Turn maintenance on',
        reason: true,
      });
      if (reason === null) return;
      const body = reason ? { enabled: true, reason } : { enabled: true };
      await act(`${inst.id}: maintenance on`, 'PUT', `${instancePath(service, inst.id)}/maintenance`, body);
    } else {
      await act(`${inst.id}: maintenance off`, 'PUT', `${instancePath(service, inst.id)}/maintenance`, { enabled: false });
    }
  }

  async function deregister(service, inst) {
    const ok = await ask({
      title: `Deregister ${inst.id}?`,
      text: `${inst.id} (${inst.address}:${inst.port}) is removed from ${service} and from DNS. It comes back only if it registers again.`,
      ok: 'Deregister',
      danger: true,
    });
    if (ok === null) return;
    await act(`${inst.id}: deregistered`, 'DELETE', instancePath(service, inst.id));
  }

  // ---- the overview -------------------------------------------------------------------

  const COLUMNS = [
    { key: 'name', label: 'Service', text: true },
    { key: 'instances', label: 'Instances' },
    { key: 'passing', label: 'Passing' },
    { key: 'warning', label: 'Warning' },
    { key: 'critical', label: 'Critical' },
    { key: 'maintenance', label: 'Maintenance' },
  ];

  function overview(signal) {
    document.title = 'Services · signpost';
    const params = new URLSearchParams(location.search);
    const view = {
      filter: params.get('q') || '',
      sort: COLUMNS.some((c) => c.key === params.get('sort')) ? params.get('sort') : 'name',
      desc: params.get('dir') === 'desc',
      services: null,
    };
    const filter = el('input', {
      type: 'search', id: 'filter', placeholder: 'Filter services', value: view.filter,
      'aria-label': 'Filter services by name',
    });
    const summary = el('p', { class: 'summary', id: 'summary' }, 'Loading…');
    const head = el('tr');
    const body = el('tbody', { id: 'services' });
    const table = el('table', { class: 'grid services' }, el('thead', {}, head), body);
    $('main').replaceChildren(el('section', {},
      el('div', { class: 'titlebar' }, el('h1', {}, 'Services'), filter),
      summary, table));

    function remember() {
      const p = new URLSearchParams();
      if (view.filter) p.set('q', view.filter);
      if (view.sort !== 'name') p.set('sort', view.sort);
      if (view.desc) p.set('dir', 'desc');
      const q = p.toString();
      history.replaceState(null, '', q ? `?${q}` : location.pathname);
    }

    function headers() {
      head.replaceChildren(...COLUMNS.map((c) => {
        const sorted = view.sort === c.key;
        return el('th', {
          scope: 'col', class: c.text ? '' : 'num',
          'aria-sort': sorted ? (view.desc ? 'descending' : 'ascending') : 'none',
        }, el('button', {
          type: 'button', 'data-sort': c.key,
          onclick: () => {
            if (view.sort === c.key) view.desc = !view.desc;
            else { view.sort = c.key; view.desc = !c.text; }
            remember();
            headers();
            rows();
          },
        }, c.label, el('span', { class: 'arrow', 'aria-hidden': 'true' }, sorted ? (view.desc ? '▼' : '▲') : '')));
      }));
    }

    function rows() {
      if (!view.services) return;
      const needle = view.filter.trim().toLowerCase();
      const list = view.services.filter((s) => s.name.includes(needle));
      const k = view.sort;
      // The chosen column in the chosen direction; ties by name, always A to Z.
      list.sort((a, b) => {
        const c = k === 'name' ? a.name.localeCompare(b.name) : a[k] - b[k];
        return (view.desc ? -c : c) || a.name.localeCompare(b.name);
      });
      const total = (key) => view.services.reduce((n, s) => n + (s[key] || 0), 0);
      summary.replaceChildren(
        `${view.services.length} service${view.services.length === 1 ? '' : 's'}, ${total('instances')} instances: `,
        ...STATUSES.map((st) => el('span', { class: `count st-${st}`, 'data-zero': total(st) === 0 }, `${total(st)} ${st}`)),
        needle ? ` · ${list.length} shown` : '');
      if (list.length === 0) {
        body.replaceChildren(el('tr', {}, el('td', { colSpan: COLUMNS.length, class: 'empty' },
          view.services.length === 0
            ? 'No services registered yet. This page updates as soon as one registers.'
            : 'No service matches the filter.')));
        return;
      }
      body.replaceChildren(...list.map((s) => {
        const worst = s.critical ? 'critical' : s.warning ? 'warning' : s.passing ? 'passing' : s.maintenance ? 'maintenance' : 'none';
        return el('tr', { 'data-service': s.name, 'data-worst': worst },
          el('td', { 'data-label': 'Service' },
            el('a', { href: `/ui/services/${encodeURIComponent(s.name)}` }, s.name)),
          el('td', { class: 'num', 'data-label': 'Instances', 'data-col': 'instances' }, s.instances),
          ...STATUSES.map((st) => el('td', { class: 'num', 'data-label': st, 'data-col': st },
            el('span', { class: `count st-${st}`, 'data-zero': !s[st] }, s[st] || 0))));
      }));
    }

    filter.addEventListener('input', () => {
      view.filter = filter.value;
      remember();
      rows();
    });
    headers();
    follow('/v1/services', (data, err) => {
      if (err) {
        summary.textContent = err.message;
        return;
      }
      view.services = (data && data.services ? data.services : []).map((s) => ({
        name: s.name,
        instances: s.instances || 0,
        passing: s.passing || 0,
        warning: s.warning || 0,
        critical: s.critical || 0,
        maintenance: s.maintenance || 0,
      }));
      rows();
    }, signal);
  }

  // ---- a service ----------------------------------------------------------------------

  /** passing, warning, critical, or maintenance (which wins: the instance is drained). */
  const effective = (inst) => (inst.maintenance ? 'maintenance' : inst.health.status);

  /** The DNS server as dig is told it: an unspecified listen address is this page's host. */
  function dnsServer() {
    const addr = (state.config && state.config.dns && state.config.dns[0]) || '127.0.0.1:8600';
    const m = /^\[?(.*?)\]?:(\d+)$/.exec(addr);
    let host = m ? m[1] : addr;
    const port = m ? m[2] : '53';
    if (host === '0.0.0.0' || host === '::') host = location.hostname.replace(/^\[|\]$/g, '');
    return { host, port };
  }

  function digLine(name, type) {
    const { host, port } = dnsServer();
    return `dig @${host}${port === '53' ? '' : ` -p ${port}`} ${name} ${type}`;
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Pages over plain HTTP on a non-local name have no clipboard API: select and copy.
      const t = el('textarea', { value: text, readOnly: true, class: 'offscreen' });
      document.body.append(t);
      t.select();
      document.execCommand('copy');
      t.remove();
    }
    const before = button.textContent;
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = before; }, 1500);
  }

  function dnsNames(service, instances) {
    const domain = (state.config && state.config.domain) || 'internal.';
    const names = [
      [`${service}.service.${domain}`, 'SRV', 'A, AAAA, SRV: healthy instances'],
      [`_${service}._tcp.service.${domain}`, 'SRV', 'SRV, RFC 2782 form'],
    ];
    // Only tags that are DNS labels name a filter (the Consul API also takes others).
    const tags = [...new Set(instances.flatMap((i) => i.tags || []))].filter((t) => LABEL.test(t)).sort();
    for (const t of tags) {
      names.push([`${t}.${service}.service.${domain}`, 'SRV', `tagged ${t}`]);
    }
    const ports = [...new Set(instances.flatMap((i) => Object.keys(i.ports || {})))].sort();
    for (const p of ports) {
      names.push([`_${p}._tcp.${service}.service.${domain}`, 'SRV', `named port ${p}`]);
    }
    if (instances.length > 0) {
      names.push([`${instances[0].id}.${service}.instance.${domain}`, 'A', 'one instance, whatever its health (<id>.…; TXT: metadata)']);
    }
    const { host, port } = dnsServer();
    return el('section', { class: 'dns', id: 'dns' },
      el('h2', {}, 'DNS names'),
      el('p', { class: 'muted' }, `Asked of signpost's DNS server at ${host} port ${port}.`),
      el('ul', { class: 'names' }, names.map(([name, type, what]) => {
        const line = digLine(name, type);
        const button = el('button', { type: 'button', class: 'copy', onclick: () => copy(line, button) }, 'Copy');
        return el('li', {},
          el('div', { class: 'name' }, el('code', {}, name), el('span', { class: 'muted' }, what)),
          el('div', { class: 'dig' }, el('code', { class: 'digline' }, line), button));
      })));
  }

  function servicePage(service, signal) {
    document.title = `${service} · signpost`;
    const heading = el('div', { class: 'titlebar' },
      el('h1', {}, el('a', { href: '/ui/', class: 'back', 'aria-label': 'All services' }, '←'), ' ', service));
    const summary = el('p', { class: 'summary', id: 'summary' }, 'Loading…');
    const hint = el('p', { class: 'hint', id: 'hint', hidden: true });
    const body = el('tbody', { id: 'instances' });
    const head = el('tr', {}, ['ID', 'Address', 'Tags', 'Weight', 'Health', 'Since', 'Maintenance', ''].map((h) =>
      el('th', { scope: 'col', class: h === 'Weight' ? 'num' : '' }, h)));
    const table = el('table', { class: 'grid instances' }, el('thead', {}, head), body);
    const dns = el('div', { id: 'dns-holder' });
    $('main').replaceChildren(el('section', {}, heading, summary, hint, table), dns);

    if (!LABEL.test(service)) {
      summary.textContent = `"${service}" is not a service name: names are DNS labels ([a-z0-9-], 1 to 63 characters, no leading or trailing hyphen).`;
      summary.classList.add('error');
      table.hidden = true;
      return;
    }

    function row(inst) {
      const st = effective(inst);
      const m = inst.maintenance;
      const actions = el('td', { class: 'actions', 'data-label': 'Actions' });
      if (canWrite()) {
        actions.append(
          m
            ? el('button', { type: 'button', 'data-action': 'maintenance-off', onclick: () => maintenance(service, inst, false) }, 'End maintenance')
            : el('button', { type: 'button', 'data-action': 'maintenance-on', onclick: () => maintenance(service, inst, true) }, 'Maintenance…'),
          el('button', { type: 'button', class: 'danger', 'data-action': 'deregister', onclick: () => deregister(service, inst) }, 'Deregister…'));
      }
      return el('tr', { 'data-id': inst.id, 'data-status': st },
        el('td', { 'data-label': 'ID' }, el('code', {}, inst.id)),
        el('td', { 'data-label': 'Address' }, el('code', {}, inst.address.includes(':') ? `[${inst.address}]:${inst.port}` : `${inst.address}:${inst.port}`),
          Object.entries(inst.ports || {}).map(([name, port]) => el('span', { class: 'port', 'data-port': name }, `${name} ${port}`))),
        el('td', { 'data-label': 'Tags' }, (inst.tags || []).length
          ? el('span', { class: 'tags' }, inst.tags.map((t) => el('span', { class: 'tag' }, t)))
          : el('span', { class: 'muted' }, '—')),
        el('td', { class: 'num', 'data-label': 'Weight' }, inst.weight),
        el('td', { 'data-label': 'Health', class: 'health' },
          el('span', { class: `badge st-${inst.health.status}`, 'data-health': inst.health.status }, inst.health.status),
          inst.health.output ? el('span', { class: 'output' }, inst.health.output) : null),
        el('td', { 'data-label': 'Since' }, when(inst.health.since)),
        el('td', { 'data-label': 'Maintenance', class: 'maint' }, m
          ? [el('span', { class: 'badge st-maintenance' }, 'on'),
            m.reason ? el('span', { class: 'reason' }, m.reason) : null,
            m.since ? when(m.since) : null]
          : el('span', { class: 'muted' }, 'off')),
        actions);
    }

    follow(`/v1/services/${encodeURIComponent(service)}`, (data, err) => {
      if (err) {
        summary.textContent = err.message;
        summary.classList.add('error');
        return;
      }
      const instances = (data && data.instances) || [];
      instances.sort((a, b) => a.id.localeCompare(b.id));
      const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
      for (const i of instances) counts[effective(i)] += 1;
      summary.replaceChildren(`${instances.length} instance${instances.length === 1 ? '' : 's'}: `,
        ...STATUSES.map((st) => el('span', { class: `count st-${st}`, 'data-zero': counts[st] === 0 }, `${counts[st]} ${st}`)));
      hint.hidden = canWrite() || instances.length === 0;
      hint.textContent = state.token
        ? 'Read-only: the token entered may not write. Enter the write token to act on instances.'
        : 'Read-only: enter the write token above to put instances in maintenance or deregister them.';
      body.replaceChildren(...(instances.length
        ? instances.map(row)
        : [el('tr', {}, el('td', { colSpan: 8, class: 'empty' }, `No instance of ${service} is registered. This page updates as soon as one registers.`))]));
      dns.replaceChildren(dnsNames(service, instances));
    }, signal);
  }

  // ---- start --------------------------------------------------------------------------

  /** (Re)starts the page for the current path and token, ending the previous one's polls. */
  async function start() {
    if (state.page) state.page.abort();
    const page = new AbortController();
    state.page = page;
    setLive('connecting');
    try {
      state.config = (await api('GET', '/ui/config.json', undefined, page.signal)).data;
    } catch (e) {
      if (page.signal.aborted) return;
      if (e.status === 401) {
        locked(e.message);
        return;
      }
      state.config = null;
      setLive('offline', e.message);
      $('main').replaceChildren(el('p', { class: 'error' }, `Cannot load the dashboard: ${e.message}`),
        el('button', { type: 'button', onclick: start }, 'Try again'));
      return;
    }
    showAccess();
    const path = location.pathname;
    const m = /^\/ui\/services\/([^/]+)$/.exec(path);
    if (m) {
      let name;
      try { name = decodeURIComponent(m[1]); } catch { name = m[1]; }
      // Names compare lowercased, as the API compares them.
      name = name.toLowerCase();
      servicePage(name, page.signal);
    } else {
      overview(page.signal);
    }
  }

  showAccess();
  start();
})();
