// BluesMinds dashboard: the few things pages do in the browser. Pages are
// rendered by the server; every change goes to the JSON API with the
// session's CSRF token (from <meta name="csrf-token">) in `x-csrf-token`.
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);

  function csrfToken() {
    const meta = $('meta[name="csrf-token"]');
    return meta ? meta.content : '';
  }

  // Calls the JSON API; throws an Error carrying the API's error.message.
  async function api(method, url, body) {
    const headers = { 'x-csrf-token': csrfToken(), accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (_) {
      throw new Error('The gateway did not answer. Check your connection and try again.');
    }
    let data = null;
    if (resp.status !== 204) {
      try {
        data = await resp.json();
      } catch (_) {
        data = null;
      }
    }
    if (!resp.ok) {
      const message = data && data.error && data.error.message;
      throw new Error(message || `Request failed (HTTP ${resp.status}).`);
    }
    return data;
  }

  function showError(form, message) {
    const el = $('.form-error', form);
    if (!el) return;
    el.textContent = message || '';
    el.hidden = !message;
  }

  function setBusy(button, busy) {
    if (!button) return;
    button.disabled = busy;
    button.classList.toggle('is-busy', busy);
  }

  // A message shown now, or after the next page load (`later`).
  function toast(message, later) {
    if (later) {
      try {
        sessionStorage.setItem('bm-toast', message);
      } catch (_) {
        /* storage off: no toast */
      }
      return;
    }
    const el = $('#toast');
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
    el.classList.add('show');
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => {
      el.classList.remove('show');
      el.hidden = true;
    }, 3500);
  }

  function pendingToast() {
    let message = null;
    try {
      message = sessionStorage.getItem('bm-toast');
      sessionStorage.removeItem('bm-toast');
    } catch (_) {
      message = null;
    }
    if (message) toast(message);
  }

  function commaList(value) {
    return value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  }

  // --- Log in / sign up -----------------------------------------------------

  function initAuthForm() {
    const form = $('#auth-form');
    if (!form) return;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      showError(form, '');
      const submit = $('button[type="submit"]', form);
      setBusy(submit, true);
      try {
        await api('POST', form.dataset.endpoint, {
          email: form.elements.email.value,
          password: form.elements.password.value,
        });
        window.location.assign('/dashboard');
      } catch (err) {
        showError(form, err.message);
        setBusy(submit, false);
      }
    });
  }

  // --- API keys -----------------------------------------------------------------

  const keyDialog = () => $('#key-dialog');

  function openCreateKey() {
    const dialog = keyDialog();
    if (!dialog) return;
    const form = $('#create-key-form');
    form.reset();
    showError(form, '');
    form.hidden = false;
    $('#key-secret-view').hidden = true;
    dialog.dataset.changed = '';
    dialog.showModal();
    $('#key-name').focus();
  }

  function showSecret(title, note, secret) {
    const dialog = keyDialog();
    $('#create-key-form').hidden = true;
    $('#key-secret-title').textContent = title;
    $('#key-secret-note').textContent = note;
    $('#new-key-secret').textContent = secret;
    $('#copy-key').textContent = 'Copy';
    $('#key-secret-view').hidden = false;
    dialog.dataset.changed = '1';
    if (!dialog.open) dialog.showModal();
    $('#copy-key').focus();
  }

  function initKeyDialog() {
    const dialog = keyDialog();
    if (!dialog) return;
    const form = $('#create-key-form');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      showError(form, '');
      const body = { name: form.elements.name.value.trim() };
      if (!body.name) {
        showError(form, 'Give the key a name.');
        return;
      }
      const days = form.elements.expires_in_days.value.trim();
      if (days) {
        const n = Number(days);
        if (!Number.isInteger(n) || n < 1) {
          showError(form, 'Expiry must be a whole number of days, at least 1.');
          return;
        }
        body.expires_in_days = n;
      }
      const models = commaList(form.elements.models.value);
      if (models.length) body.models = models;
      const submit = $('#create-key-submit');
      setBusy(submit, true);
      try {
        const created = await api('POST', '/api/keys', body);
        showSecret('Your new API key', `"${created.name}" (${created.display})`, created.key);
      } catch (err) {
        showError(form, err.message);
      } finally {
        setBusy(submit, false);
      }
    });
    // Once a secret was shown the list changed: reload it when the dialog closes
    // (Done, the close button or Escape).
    dialog.addEventListener('close', () => {
      $('#new-key-secret').textContent = '';
      if (dialog.dataset.changed) window.location.reload();
    });
  }

  async function rotateKey(button) {
    const name = button.dataset.name;
    const ok = window.confirm(
      `Rotate "${name}"? You get a new key with the same settings; the old one keeps working for ${button.dataset.grace || 'a grace period'}, then stops.`,
    );
    if (!ok) return;
    setBusy(button, true);
    try {
      const created = await api('POST', `/api/keys/${button.dataset.id}/rotate`, {});
      showSecret('Key rotated', `New key for "${created.name}" (${created.display}). Switch your clients to it before the old one expires.`, created.key);
    } catch (err) {
      window.alert(err.message);
    } finally {
      setBusy(button, false);
    }
  }

  async function revokeKey(button) {
    const name = button.dataset.name;
    if (!window.confirm(`Revoke "${name}"? Requests with this key fail at once. This cannot be undone.`)) {
      return;
    }
    setBusy(button, true);
    try {
      await api('DELETE', `/api/keys/${button.dataset.id}`);
      toast(`Key "${name}" revoked.`, true);
      window.location.reload();
    } catch (err) {
      window.alert(err.message);
      setBusy(button, false);
    }
  }

  async function copyText(button) {
    const target = document.getElementById(button.dataset.copyTarget);
    if (!target) return;
    const text = target.textContent;
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (_) {
        copied = false;
      }
    }
    if (!copied) {
      // Older browsers and plain-HTTP origins: select the text and copy it.
      const range = document.createRange();
      range.selectNodeContents(target);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try {
        copied = document.execCommand('copy');
      } catch (_) {
        copied = false;
      }
    }
    button.textContent = copied ? 'Copied' : 'Select and copy';
    button.classList.toggle('is-done', copied);
  }

  // --- Admin ------------------------------------------------------------------------

  function initServerForm() {
    const form = $('#server-form');
    if (!form) return;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      showError(form, '');
      const f = form.elements;
      const body = {
        pool: f.pool.value.trim(),
        url: f.url.value.trim(),
        models: commaList(f.models.value),
        weight: Number(f.weight.value || 1),
        priority: Number(f.priority.value || 0),
      };
      const env = f.api_key_env.value.trim();
      if (env) body.api_key_env = env;
      const submit = $('button[type="submit"]', form);
      setBusy(submit, true);
      try {
        await api('POST', '/api/admin/servers', body);
        toast(`Server ${body.url} added to pool "${body.pool}".`, true);
        window.location.reload();
      } catch (err) {
        showError(form, err.message);
        setBusy(submit, false);
      }
    });
  }

  async function deleteServer(button) {
    if (!window.confirm(`Delete the server ${button.dataset.url}? The proxy stops using it at once.`)) {
      return;
    }
    setBusy(button, true);
    try {
      await api('DELETE', `/api/admin/servers/${button.dataset.id}`);
      toast('Server deleted.', true);
      window.location.reload();
    } catch (err) {
      window.alert(err.message);
      setBusy(button, false);
    }
  }

  // Billing: Creem's hosted checkout takes over from here.
  async function choosePlan(button) {
    setBusy(button, true);
    try {
      const data = await api('POST', '/api/billing/checkout', { plan: button.dataset.plan });
      window.location.assign(data.url);
    } catch (err) {
      window.alert(err.message);
      setBusy(button, false);
    }
  }

  async function setUserDisabled(button, disable) {
    const email = button.dataset.email;
    if (disable && !window.confirm(`Disable ${email}? Their keys and sessions stop working at once.`)) {
      return;
    }
    setBusy(button, true);
    try {
      await api('POST', `/api/admin/users/${button.dataset.id}/${disable ? 'disable' : 'enable'}`);
      toast(`${email} ${disable ? 'disabled' : 'enabled'}.`, true);
      window.location.reload();
    } catch (err) {
      window.alert(err.message);
      setBusy(button, false);
    }
  }

  async function logout(button) {
    setBusy(button, true);
    try {
      await api('POST', '/api/auth/logout');
    } catch (_) {
      // Signed out already (or the session is gone): the login page either way.
    }
    window.location.assign('/login');
  }

  const actions = {
    logout,
    'open-create-key': openCreateKey,
    'close-dialog': (button) => {
      const dialog = button.closest('dialog');
      if (dialog) dialog.close();
    },
    'rotate-key': rotateKey,
    'revoke-key': revokeKey,
    copy: copyText,
    'delete-server': deleteServer,
    'disable-user': (b) => setUserDisabled(b, true),
    'enable-user': (b) => setUserDisabled(b, false),
    'choose-plan': choosePlan,
  };

  document.addEventListener('click', (event) => {
    const button = event.target.closest('[data-action]');
    if (!button) return;
    const action = actions[button.dataset.action];
    if (!action) return;
    event.preventDefault();
    action(button);
  });

  document.addEventListener('DOMContentLoaded', () => {
    initAuthForm();
    initKeyDialog();
    initServerForm();
    pendingToast();
  });
})();
