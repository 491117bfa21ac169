/**
 * packlab in JupyterLab: a launcher card, a palette item and the command
 * `packlab:open-panel` open the live panel (served by the Jupyter server under
 * /packlab/panel, behind Jupyter's login) in a main-area tab, restored on reload; a
 * sidebar lists the user's running clusters and recent queue stores, starts a cluster
 * in the Jupyter server and inserts the two lines that connect a notebook to one.
 *
 * This file only draws and wires: every decision is the server's (packlab's).
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Clipboard,
  ICommandPalette,
  IFrame,
  MainAreaWidget,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

const OPEN = 'packlab:open-panel';
const INSERT = 'packlab:insert-connect';

const ICON = new LabIcon({
  name: 'packlab:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
    '<rect class="jp-icon3" fill="#616161" x="3" y="13" width="4" height="8" rx="1"/>' +
    '<rect class="jp-icon3" fill="#616161" x="10" y="8" width="4" height="13" rx="1"/>' +
    '<rect class="jp-icon3" fill="#616161" x="17" y="3" width="4" height="18" rx="1"/></svg>'
});

/** Arguments of the open-panel command: what the panel draws. */
interface IPanelArgs {
  store?: string;
  cluster?: string;
  label?: string;
}

interface ICluster {
  name: string;
  backend: string;
  profile: string | null;
  scheduler: string;
  workers: number | null;
  depth: number | null;
  done: number | null;
  cost: string | null;
  store: string | null;
  here: boolean;
  host: string;
  pid: number;
  connect: string;
}

interface IStore {
  path: string;
  name: string;
  cluster: string | null;
  workers: number;
  depth: number | null;
  done: number | null;
  cost: string | null;
}

/** A JSON request to packlab's API in the Jupyter server (token and XSRF included). */
async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'packlab', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) {
    throw new Error(data.error || `${response.status} ${response.statusText}`);
  }
  return data as T;
}

function panelUrl(args: IPanelArgs): string {
  const base = URLExt.join(PageConfig.getBaseUrl(), 'packlab', 'panel');
  if (args.store) {
    return `${base}?store=${encodeURIComponent(args.store)}`;
  }
  if (args.cluster) {
    return `${base}?cluster=${encodeURIComponent(args.cluster)}`;
  }
  return base;
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

function count(n: number | null, what: string): string {
  return n === null || n === undefined ? `${what} -` : `${what} ${n}`;
}

/** The sidebar: running clusters, recent stores and the New cluster form. */
class PacklabSidebar extends Widget {
  constructor(private app: JupyterFrontEnd) {
    super();
    this.id = 'packlab-sidebar';
    this.addClass('packlab-sidebar');
    this.title.icon = ICON;
    this.title.caption = 'packlab: clusters and stores';
    const root = this.node;
    const header = element('div', { class: 'packlab-header' });
    header.appendChild(element('h2', {}, 'packlab'));
    const refresh = element('button', { class: 'packlab-button packlab-refresh', title: 'Refresh' }, '⟳');
    refresh.onclick = () => void this.refresh();
    header.appendChild(refresh);
    root.appendChild(header);

    root.appendChild(element('h3', {}, 'Running clusters'));
    this.clusterList = root.appendChild(element('ul', { class: 'packlab-list packlab-clusters' }));
    root.appendChild(element('h3', {}, 'Recent stores'));
    this.storeList = root.appendChild(element('ul', { class: 'packlab-list packlab-stores' }));

    root.appendChild(element('h3', {}, 'New cluster'));
    const form = root.appendChild(element('form', { class: 'packlab-form' }));
    this.backend = this.field(form, 'Backend', element('select', { name: 'backend' }));
    this.profile = this.field(form, 'Profile', element('select', { name: 'profile' }));
    this.minWorkers = this.field(
      form,
      'Min workers',
      element('input', { name: 'min_workers', type: 'number', min: '0', value: '1' })
    );
    this.maxWorkers = this.field(
      form,
      'Max workers',
      element('input', { name: 'max_workers', type: 'number', min: '1', value: '1' })
    );
    this.name = this.field(
      form,
      'Name',
      element('input', { name: 'name', type: 'text', placeholder: 'generated if blank' })
    );
    this.start = form.appendChild(
      element('button', { type: 'submit', class: 'packlab-button packlab-start' }, 'Start cluster')
    );
    form.onsubmit = event => {
      event.preventDefault();
      void this.startCluster();
    };
    this.status = root.appendChild(element('div', { class: 'packlab-status' }));
  }

  private field<T extends HTMLElement>(form: HTMLElement, label: string, input: T): T {
    const row = element('label', { class: 'packlab-field' });
    row.appendChild(element('span', {}, label));
    row.appendChild(input);
    form.appendChild(row);
    return input;
  }

  protected onAfterAttach(): void {
    void this.loadOptions();
    void this.refresh();
    this.timer = window.setInterval(() => {
      if (this.isVisible) {
        void this.refresh();
      }
    }, 2000);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.timer);
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private async loadOptions(): Promise<void> {
    try {
      const o = await api<{
        backends: string[];
        backend: string;
        profiles: { name: string; summary: string }[];
        profile: string;
      }>('options');
      this.backend.replaceChildren(
        ...o.backends.map(b => element('option', { value: b }, b))
      );
      this.backend.value = o.backend;
      this.profile.replaceChildren(
        ...o.profiles.map(p => element('option', { value: p.name, title: p.summary }, p.name))
      );
      this.profile.value = o.profile;
    } catch (e) {
      this.say(`packlab's server extension does not answer: ${e}`, true);
    }
  }

  async refresh(): Promise<void> {
    try {
      const [{ clusters }, { stores }] = await Promise.all([
        api<{ clusters: ICluster[] }>('clusters'),
        api<{ stores: IStore[] }>('stores')
      ]);
      this.drawClusters(clusters);
      this.drawStores(stores);
    } catch (e) {
      this.say(`Could not list clusters: ${e}`, true);
    }
  }

  private drawClusters(clusters: ICluster[]): void {
    if (!clusters.length) {
      this.clusterList.replaceChildren(
        element('li', { class: 'packlab-empty' }, 'None running. Start one below, or packlab.launch().')
      );
      return;
    }
    this.clusterList.replaceChildren(
      ...clusters.map(c => {
        const li = element('li', { class: 'packlab-item packlab-cluster', 'data-name': c.name });
        li.appendChild(element('div', { class: 'packlab-item-name' }, c.name));
        const facts = [`${c.backend}${c.profile ? ' · ' + c.profile : ''}`, count(c.workers, 'workers')];
        if (c.depth !== null) {
          facts.push(count(c.depth, 'queue'), count(c.done, 'done'));
        }
        if (c.cost) {
          facts.push(c.cost);
        }
        li.appendChild(element('div', { class: 'packlab-item-facts' }, facts.join(' · ')));
        li.appendChild(
          element(
            'div',
            { class: 'packlab-item-where', title: c.scheduler },
            c.here ? 'in this Jupyter server' : `pid ${c.pid} on ${c.host}`
          )
        );
        const buttons = li.appendChild(element('div', { class: 'packlab-buttons' }));
        this.button(buttons, 'Panel', 'packlab-open', () =>
          this.app.commands.execute(OPEN, c.store ? { store: c.store, label: c.name } : { cluster: c.name })
        );
        this.button(buttons, 'Insert connect', 'packlab-insert', () =>
          this.app.commands.execute(INSERT, { name: c.name })
        );
        if (c.here) {
          this.button(buttons, 'Stop', 'packlab-stop', () => this.stopCluster(c.name));
        }
        return li;
      })
    );
  }

  private drawStores(stores: IStore[]): void {
    if (!stores.length) {
      this.storeList.replaceChildren(
        element('li', { class: 'packlab-empty' }, 'No store yet: a JobQueue records its store here.')
      );
      return;
    }
    this.storeList.replaceChildren(
      ...stores.map(s => {
        const li = element('li', { class: 'packlab-item packlab-store', 'data-path': s.path, title: s.path });
        li.appendChild(element('div', { class: 'packlab-item-name' }, s.name));
        const facts = [count(s.workers, 'workers'), count(s.depth, 'queue'), count(s.done, 'done')];
        if (s.cost) {
          facts.push(s.cost);
        }
        if (s.cluster) {
          facts.unshift(s.cluster);
        }
        li.appendChild(element('div', { class: 'packlab-item-facts' }, facts.join(' · ')));
        const buttons = li.appendChild(element('div', { class: 'packlab-buttons' }));
        this.button(buttons, 'Panel', 'packlab-open', () =>
          this.app.commands.execute(OPEN, { store: s.path, label: s.name })
        );
        return li;
      })
    );
  }

  private button(parent: HTMLElement, text: string, cls: string, action: () => unknown): void {
    const b = parent.appendChild(element('button', { class: `packlab-button ${cls}` }, text));
    b.onclick = () => void action();
  }

  private async startCluster(): Promise<void> {
    const body: Record<string, unknown> = {
      backend: this.backend.value,
      profile: this.profile.value,
      min_workers: Number(this.minWorkers.value),
      max_workers: Number(this.maxWorkers.value)
    };
    if (this.name.value.trim()) {
      body.name = this.name.value.trim();
    }
    this.start.disabled = true;
    this.say('Starting…');
    try {
      const r = await api<{ name: string; notes: string[] }>('clusters', {
        method: 'POST',
        body: JSON.stringify(body)
      });
      this.say(`Started ${r.name}.${r.notes.length ? ' ' + r.notes.join(' ') : ''}`);
      this.name.value = '';
      await this.refresh();
    } catch (e) {
      this.say(`${e instanceof Error ? e.message : e}`, true);
    } finally {
      this.start.disabled = false;
    }
  }

  private async stopCluster(name: string): Promise<void> {
    this.say(`Stopping ${name}…`);
    try {
      await api(`clusters/${encodeURIComponent(name)}`, { method: 'DELETE' });
      this.say(`Stopped ${name}.`);
    } catch (e) {
      this.say(`${e instanceof Error ? e.message : e}`, true);
    }
    await this.refresh();
  }

  private say(text: string, error = false): void {
    this.status.textContent = text;
    this.status.classList.toggle('packlab-error', error);
  }

  private clusterList: HTMLUListElement;
  private storeList: HTMLUListElement;
  private backend: HTMLSelectElement;
  private profile: HTMLSelectElement;
  private minWorkers: HTMLInputElement;
  private maxWorkers: HTMLInputElement;
  private name: HTMLInputElement;
  private start: HTMLButtonElement;
  private status: HTMLDivElement;
  private timer = 0;
}

/**
 * A panel tab: an IFrame of the panel page, remembering what it draws. The page is
 * loaded when the tab is first shown: Bokeh lays out a page loaded while hidden (a tab
 * restored behind another one) at zero size, and a tab never looked at costs the server
 * no session.
 */
class PanelFrame extends IFrame {
  constructor(readonly args: IPanelArgs) {
    // The panel's scripts need to run, and its websocket is to Jupyter's own origin.
    super({ sandbox: ['allow-scripts', 'allow-same-origin'] });
    this.addClass('packlab-panel-frame');
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.load();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.load();
  }

  private load(): void {
    if (!this.url) {
      this.url = panelUrl(this.args);
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'packlab-jupyterlab:plugin',
  description: 'The packlab panel, a sidebar of clusters and stores, and a launcher card.',
  autoStart: true,
  optional: [ILauncher, ICommandPalette, ILayoutRestorer, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null
  ) => {
    const tracker = new WidgetTracker<MainAreaWidget<PanelFrame>>({ namespace: 'packlab-panel' });

    app.commands.addCommand(OPEN, {
      label: args => (args.isPalette || !args.label ? 'packlab panel' : `packlab: ${args.label}`),
      caption: 'Open the live packlab panel (queue, jobs done, depth over time)',
      icon: args => (args.isPalette ? undefined : ICON),
      execute: async args => {
        const what: IPanelArgs = {
          store: (args.store as string) || undefined,
          cluster: (args.cluster as string) || undefined,
          label: (args.label as string) || undefined
        };
        const open = tracker.find(w => panelUrl(w.content.args) === panelUrl(what));
        if (open) {
          app.shell.activateById(open.id);
          return open;
        }
        const widget = new MainAreaWidget({ content: new PanelFrame(what) });
        widget.id = `packlab-panel-${Date.now()}`;
        widget.title.label = what.label ? `packlab: ${what.label}` : 'packlab panel';
        widget.title.icon = ICON;
        widget.title.closable = true;
        await tracker.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    app.commands.addCommand(INSERT, {
      label: 'Insert the packlab.connect cell',
      caption: 'Insert the two lines that connect a notebook to a running packlab cluster',
      execute: async args => {
        const name = args.name as string;
        const code = `import packlab\nclient = packlab.connect("${name}")`;
        const panel = notebooks?.currentWidget;
        if (!panel) {
          Clipboard.copyToSystem(code);
          Notification.info('No notebook is open: the two lines are copied to the clipboard.', {
            autoClose: 4000
          });
          return;
        }
        const active = panel.content.activeCell;
        if (!active || active.model.sharedModel.getSource().trim() !== '') {
          NotebookActions.insertBelow(panel.content); // never overwrite code
        }
        const cell = panel.content.activeCell;
        if (cell) {
          cell.model.sharedModel.setSource(code);
        }
        app.shell.activateById(panel.id);
      }
    });

    if (launcher) {
      launcher.add({ command: OPEN, category: 'Other', rank: 0 });
    }
    if (palette) {
      palette.addItem({ command: OPEN, category: 'packlab' });
    }

    const sidebar = new PacklabSidebar(app);
    app.shell.add(sidebar, 'left', { rank: 300 });
    if (restorer) {
      restorer.add(sidebar, 'packlab-sidebar');
      void restorer.restore(tracker, {
        command: OPEN,
        args: w => ({ ...w.content.args }),
        name: w => panelUrl(w.content.args)
      });
    }
  }
};

export default plugin;
