/* Spool web UI: plain JavaScript, no framework, no build step.
 *
 * One page for every UI path; the path picks the view:
 *   /                                 projects
 *   /ui/gh/ORG/REPO                   a project's pipelines, workflows and jobs
 *   /ui/gh/ORG/REPO/jobs/NUMBER       a job: steps and their output, live
 *
 * Data comes from the API (CircleCI's v2 shapes, Spool's output stream)
 * with the API token the user pasted once; it stays in localStorage.
 * Everything from the server is put in the page as text (textContent),
 * never as HTML. */
'use strict';

(function () {
  const TOKEN_KEY = 'spool.token';
  const JOB_FINAL = new Set(['success', 'failed', 'canceled', 'timedout', 'infrastructure_fail', 'not_run',
    'terminated-unknown', 'unauthorized', 'retried']);
  const WF_FINAL = new Set(['success', 'failed', 'error', 'canceled', 'not_run', 'unauthorized']);
  const main = document.getElementById('main');

  /* ---- helpers ---- */

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function badge(status, testid) {
    const s = String(status || 'unknown');
    return el('span', { class: 'badge s-' + s.replace(/[^a-z_-]/g, ''), 'data-testid': testid, text: s.replace(/_/g, ' ') });
  }

  function token() { return localStorage.getItem(TOKEN_KEY) || ''; }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h['Circle-Token'] = token();
    return h;
  }

  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: 'no-store' });
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).message || msg; } catch (e) { /* not JSON */ }
      throw new ApiError(r.status, msg);
    }
    return r.json();
  }

  async function apiPost(path, body) {
    const r = await fetch(path, {
      method: 'POST', headers: headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify(body || {}), cache: 'no-store' });
    let doc = {};
    try { doc = await r.json(); } catch (e) { /* no body */ }
    if (!r.ok) throw new ApiError(r.status, doc.message || r.statusText);
    return doc;
  }

  function showError(err) {
    main.replaceChildren();
    if (err instanceof ApiError && err.status === 401) {
      main.append(el('p', { class: 'notice', 'data-testid': 'need-token',
        text: 'This page needs an API token: paste one in the "API token" field above and press Save. ' +
          'An administrator creates tokens with POST /admin/tokens on the admin socket.' }));
      return;
    }
    main.append(el('p', { class: 'error', 'data-testid': 'error', text: String(err.message || err) }));
  }

  function crumbs(parts) {
    const nav = document.getElementById('crumbs');
    nav.replaceChildren();
    parts.forEach((p, i) => {
      if (i) nav.append(el('span', { class: 'sep', text: '/' }));
      nav.append(p.href ? el('a', { href: p.href, text: p.text }) : el('span', { text: p.text }));
    });
  }

  function when(ts) {
    if (!ts) return '';
    const d = new Date(ts);
    return isNaN(d) ? ts : d.toLocaleString();
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return '';
    if (ms < 1000) return ms + ' ms';
    const s = Math.round(ms / 1000);
    return s < 60 ? s + 's' : Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  }

  const enc = encodeURIComponent;

  /* ---- token field ---- */

  const form = document.getElementById('token-form');
  const input = document.getElementById('token');
  input.value = token();
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = input.value.trim();
    if (v) localStorage.setItem(TOKEN_KEY, v); else localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  /* ---- projects ---- */

  async function projectsPage() {
    crumbs([{ text: 'Projects' }]);
    let list;
    try { list = await api('/api/v1.1/projects'); } catch (e) { showError(e); return; }
    main.replaceChildren(el('h1', { text: 'Projects' }));
    if (!list.length) {
      main.append(el('p', { class: 'muted', text: 'No projects yet. Add one with POST /api/v2/project.' }));
      return;
    }
    const body = el('tbody');
    for (const p of list) {
      const href = '/ui/gh/' + enc(p.username) + '/' + enc(p.reponame);
      body.append(el('tr', { 'data-testid': 'project' },
        el('td', {}, el('a', { href, text: p.username + '/' + p.reponame })),
        el('td', { class: 'sha', text: p.vcs_url }),
        el('td', { text: p.default_branch || '' }),
        el('td', {}, p.building ? null : badge('not_running'))));
    }
    main.append(el('table', {}, el('thead', {}, el('tr', {}, el('th', { text: 'Project' }),
      el('th', { text: 'Repository' }), el('th', { text: 'Default branch' }), el('th', { text: '' }))), body));
  }

  /* ---- pipelines ---- */

  async function pipelinesPage(org, repo) {
    const slug = 'gh/' + enc(org) + '/' + enc(repo);
    crumbs([{ text: 'Projects', href: '/' }, { text: org + '/' + repo }]);
    let pages = 1;
    let timer = null;

    async function load() {
      const pipes = [];
      let tok = null;
      let more = false;
      for (let i = 0; i < pages; i++) {
        const q = tok ? '?page-token=' + enc(tok) : '';
        const page = await api('/api/v2/project/' + slug + '/pipeline' + q);
        pipes.push(...page.items);
        tok = page.next_page_token;
        more = !!tok;
        if (!tok) break;
      }
      await Promise.all(pipes.map(async (p) => {
        p.workflows = (await api('/api/v2/pipeline/' + enc(p.id) + '/workflow')).items;
        await Promise.all(p.workflows.map(async (w) => {
          w.jobs = (await api('/api/v2/workflow/' + enc(w.id) + '/job')).items;
        }));
      }));
      return { pipes, more };
    }

    /* A button that POSTs to the API, then redraws; a refusal is shown
     * beside the workflow rather than replacing the page. */
    function action(label, testid, path, body) {
      const b = el('button', { type: 'button', class: 'act', 'data-testid': testid, text: label });
      b.addEventListener('click', async () => {
        b.disabled = true;
        try {
          await apiPost(path, body);
          refresh();
        } catch (e) {
          b.disabled = false;
          b.after(el('span', { class: 'act-error', 'data-testid': 'action-error', text: String(e.message || e) }));
        }
      });
      return b;
    }

    function jobPill(w, j) {
      const name = j.job_number
        ? el('a', { href: '/ui/' + slug + '/jobs/' + j.job_number, text: j.name })
        : el('span', { text: j.name });
      const approve = j.type === 'approval' && j.status === 'on_hold'
        ? action('Approve', 'approve', '/api/v2/workflow/' + enc(w.id) + '/approve/' + enc(j.approval_request_id))
        : null;
      return el('span', { class: 'job', 'data-testid': 'job', 'data-status': j.status }, badge(j.status, 'job-status'),
        name, approve);
    }

    function workflowActions(w) {
      const base = '/api/v2/workflow/' + enc(w.id);
      if (!WF_FINAL.has(w.status)) return [action('Cancel', 'cancel-workflow', base + '/cancel')];
      const out = [action('Rerun', 'rerun', base + '/rerun', {})];
      if (w.status === 'failed') out.push(action('Rerun from failed', 'rerun-failed', base + '/rerun', { from_failed: true }));
      return out;
    }

    function render(pipes, more) {
      const out = [el('h1', { text: org + '/' + repo + ': pipelines' })];
      if (!pipes.length) out.push(el('p', { class: 'muted', 'data-testid': 'no-pipelines', text: 'No pipelines yet.' }));
      for (const p of pipes) {
        const vcs = p.vcs || {};
        const ref = vcs.tag ? 'tag ' + vcs.tag : (vcs.branch || '');
        const card = el('section', { class: 'card', 'data-testid': 'pipeline', 'data-number': String(p.number) },
          el('div', { class: 'pipe-head' },
            el('span', { class: 'num', text: '#' + p.number }),
            el('span', { text: ref }),
            el('span', { class: 'sha', text: (vcs.revision || '').slice(0, 7) }),
            el('span', { text: (vcs.commit && vcs.commit.subject) || '' }),
            p.state !== 'created' ? badge(p.state, 'pipeline-state') : null,
            el('span', { class: 'muted', text: (p.trigger && p.trigger.type ? p.trigger.type + ', ' : '') + when(p.created_at) })));
        for (const e of p.errors || []) card.append(el('p', { class: 'error', text: e.type + ': ' + e.message }));
        for (const w of p.workflows || []) {
          card.append(el('div', { class: 'wf', 'data-testid': 'workflow' },
            el('div', { class: 'wf-head' }, el('h2', { text: w.name }), badge(w.status, 'workflow-status'),
              ...workflowActions(w)),
            el('div', { class: 'jobs' }, ...(w.jobs || []).map((j) => jobPill(w, j)))));
        }
        out.push(card);
      }
      if (more) {
        const b = el('button', { type: 'button', 'data-testid': 'more', text: 'Load more' });
        b.addEventListener('click', () => { pages++; refresh(); });
        out.push(el('div', { class: 'more' }, b));
      }
      main.replaceChildren(...out);
    }

    async function refresh() {
      clearTimeout(timer);
      let data;
      try { data = await load(); } catch (e) { showError(e); return; }
      render(data.pipes, data.more);
      const active = data.pipes.some((p) => ['pending', 'setup-pending', 'setup'].includes(p.state) ||
        p.workflows.some((w) => !WF_FINAL.has(w.status)));
      timer = setTimeout(refresh, active ? 2000 : 15000);
    }
    refresh();
  }

  /* ---- ANSI colours (SGR) ---- */

  const ESC_RE = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][0-9A-Za-z]|\x1b[@-_]/g;

  function rgb256(n) {
    if (n < 16) return null;
    if (n < 232) {
      n -= 16;
      const v = (x) => (x ? 55 + x * 40 : 0);
      return 'rgb(' + v(Math.floor(n / 36)) + ',' + v(Math.floor(n / 6) % 6) + ',' + v(n % 6) + ')';
    }
    const l = 8 + (n - 232) * 10;
    return 'rgb(' + l + ',' + l + ',' + l + ')';
  }

  function sgr(st, params) {
    const p = params === '' ? [0] : params.split(';').map((x) => parseInt(x || '0', 10));
    for (let i = 0; i < p.length; i++) {
      const c = p[i];
      if (c === 0) Object.assign(st, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false });
      else if (c === 1) st.bold = true;
      else if (c === 2) st.dim = true;
      else if (c === 3) st.italic = true;
      else if (c === 4) st.underline = true;
      else if (c === 22) st.bold = st.dim = false;
      else if (c === 23) st.italic = false;
      else if (c === 24) st.underline = false;
      else if (c >= 30 && c <= 37) st.fg = c - 30;
      else if (c === 39) st.fg = null;
      else if (c >= 40 && c <= 47) st.bg = c - 40;
      else if (c === 49) st.bg = null;
      else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
      else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
      else if (c === 38 || c === 48) {
        let v = null;
        if (p[i + 1] === 5) { v = p[i + 2] < 16 ? p[i + 2] : rgb256(p[i + 2]); i += 2; }
        else if (p[i + 1] === 2) { v = 'rgb(' + p[i + 2] + ',' + p[i + 3] + ',' + p[i + 4] + ')'; i += 4; }
        if (c === 38) st.fg = v; else st.bg = v;
      }
    }
  }

  function span(text, st, extra) {
    const s = document.createElement('span');
    s.textContent = text;
    const cls = [];
    if (extra) cls.push(extra);
    if (typeof st.fg === 'number') cls.push('ansi-fg-' + st.fg); else if (st.fg) s.style.color = st.fg;
    if (typeof st.bg === 'number') cls.push('ansi-bg-' + st.bg); else if (st.bg) s.style.backgroundColor = st.bg;
    if (st.bold) cls.push('ansi-bold');
    if (st.dim) cls.push('ansi-dim');
    if (st.italic) cls.push('ansi-italic');
    if (st.underline) cls.push('ansi-underline');
    if (cls.length) s.className = cls.join(' ');
    return s;
  }

  /* Appends text with its colours to pre; st carries the colour state
   * from one piece of output to the next. A carriage return inside a
   * line (progress bars) keeps what was written after it. */
  function appendAnsi(pre, st, text, extra) {
    const frag = document.createDocumentFragment();
    const lines = text.split('\n');
    lines.forEach((line, li) => {
      const trimmed = line.replace(/\r+$/, '');
      const cr = trimmed.lastIndexOf('\r');
      if (cr >= 0) line = trimmed.slice(cr + 1); else line = trimmed;
      let last = 0;
      let m;
      ESC_RE.lastIndex = 0;
      while ((m = ESC_RE.exec(line)) !== null) {
        if (m.index > last) frag.append(span(line.slice(last, m.index), st, extra));
        if (m[2] === 'm') sgr(st, m[1]);
        last = ESC_RE.lastIndex;
      }
      if (last < line.length) frag.append(span(line.slice(last), st, extra));
      if (li < lines.length - 1) frag.append('\n');
    });
    pre.append(frag);
  }

  /* ---- Server-Sent Events over fetch (EventSource cannot send the token) ---- */

  async function follow(url, on) {
    const r = await fetch(url, { headers: headers({ Accept: 'text/event-stream' }), cache: 'no-store' });
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).message || msg; } catch (e) { /* not JSON */ }
      throw new ApiError(r.status, msg);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue;
        if (name === 'end') ended = true;
        if (on[name]) on[name](JSON.parse(data.join('\n')));
      }
    }
    return ended;
  }

  /* ---- a job ---- */

  async function jobPage(org, repo, num) {
    const slug = 'gh/' + enc(org) + '/' + enc(repo);
    crumbs([{ text: 'Projects', href: '/' }, { text: org + '/' + repo, href: '/ui/' + slug }, { text: 'job ' + num }]);
    let job;
    try { job = await api('/api/v2/project/' + slug + '/job/' + num); } catch (e) { showError(e); return; }

    const status = el('span', { 'data-testid': 'job-status-box' });
    const facts = el('div', { class: 'facts' });
    const stepsBox = el('div', { 'data-testid': 'steps' });
    const streamNote = el('p', { class: 'muted', 'data-testid': 'stream-state' });
    main.replaceChildren(el('div', { class: 'job-head' }, el('h1', { text: job.name + ' #' + job.number }), status),
      facts, stepsBox, streamNote);

    function showJob(j) {
      status.replaceChildren(badge(j.status, 'job-status'));
      facts.replaceChildren(
        el('span', { text: 'workflow ' + ((j.latest_workflow && j.latest_workflow.name) || '') }),
        el('span', { text: (j.executor ? j.executor.type + ' ' + j.executor.resource_class : '') }),
        el('span', { text: j.started_at ? 'started ' + when(j.started_at) : 'not started' }),
        el('span', { 'data-testid': 'job-duration', text: duration(j.duration) }));
    }
    showJob(job);

    const steps = new Map(); /* "step.index" -> {box, pre, badge, dur, next, ansi} */

    function stepOf(d) {
      const key = d.step + '.' + d.index;
      let s = steps.get(key);
      if (s) return s;
      const pre = el('pre', { class: 'out', 'data-testid': 'step-output' });
      const st = el('span', {});
      const dur = el('span', { class: 'dur' });
      const box = el('details', { class: 'step', open: '', 'data-testid': 'step', 'data-step': String(d.step),
        'data-index': String(d.index) },
      el('summary', {}, st, el('span', { class: 'name', text: d.name + (d.index ? ' (node ' + d.index + ')' : '') }), dur),
      pre);
      s = { box, pre, badge: st, dur, next: 0, ansi: {}, order: d.step * 10000 + d.index };
      /* keep (step, index) order whatever order the events come in */
      let before = null;
      for (const o of steps.values()) if (o.order > s.order && (!before || o.order < before.order)) before = o;
      stepsBox.insertBefore(box, before ? before.box : null);
      steps.set(key, s);
      return s;
    }

    const handlers = {
      step(d) {
        const s = stepOf(d);
        s.badge.replaceChildren(badge(d.status, 'step-status'));
        s.dur.textContent = d.run_time_millis !== null && d.run_time_millis !== undefined
          ? duration(d.run_time_millis) + (d.exit_code !== null && d.exit_code !== undefined ? ', exit ' + d.exit_code : '')
          : '';
      },
      output(d) {
        const s = stepOf(d);
        if (d.seq < s.next) return; /* already shown (a reconnect sends everything again) */
        s.next = d.seq + 1;
        const pre = s.pre;
        const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
        if (d.expired) appendAnsi(pre, s.ansi, '(this part of the output has expired)\n', 'err');
        for (const line of d.lines) appendAnsi(pre, s.ansi, line.message, line.type === 'err' ? 'err' : null);
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      },
      end(d) {
        status.replaceChildren(badge(d.status, 'job-status'));
        api('/api/v2/project/' + slug + '/job/' + num).then(showJob, () => {});
      },
    };

    const url = '/api/v2/project/' + slug + '/job/' + num + '/output/stream';
    async function stream() {
      streamNote.textContent = JOB_FINAL.has(job.status) ? '' : 'Following the output live…';
      let ended = false;
      try { ended = await follow(url, handlers); } catch (e) {
        if (e instanceof ApiError) { streamNote.textContent = 'Output unavailable: ' + e.message; return; }
      }
      if (ended) { streamNote.textContent = ''; return; }
      /* The stream closed early (server restart, network): join again;
       * chunks already shown are skipped by their sequence numbers. */
      streamNote.textContent = 'Reconnecting…';
      setTimeout(stream, 2000);
    }
    stream();
  }

  /* ---- routing ---- */

  const path = location.pathname.replace(/\/+$/, '');
  let m;
  const dec = (s) => { try { return decodeURIComponent(s); } catch (e) { return s; } };
  if (path === '' || path === '/ui') projectsPage();
  else if ((m = path.match(/^\/ui\/(?:gh|github)\/([^/]+)\/([^/]+)$/))) pipelinesPage(dec(m[1]), dec(m[2]));
  else if ((m = path.match(/^\/ui\/(?:gh|github)\/([^/]+)\/([^/]+)\/jobs\/(\d+)$/))) jobPage(dec(m[1]), dec(m[2]), Number(m[3]));
  else showError(new Error('No such page: ' + location.pathname));
})();
