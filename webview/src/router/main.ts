// Router panel webview entry: restore state, two tabs (Routing: what the routers
// did, logged by the run; Weights: what the weights say, from `moelab analyze`),
// listen to the host, then say ready.
import '../../../media/panel.css';
import '@vscode-elements/elements/dist/vscode-tabs/index.js';
import '@vscode-elements/elements/dist/vscode-tab-header/index.js';
import '@vscode-elements/elements/dist/vscode-tab-panel/index.js';
import type { HostToRouterMessage, RouterState } from '../protocol';
import { parseHostToRouter, parseRouterState } from '../protocolGuards';
import { custom } from '../shared/dom';
import { listenToHost } from '../shared/messageInbox';
import { loadState, postToHost, saveState } from '../shared/vscodeApi';
import { defaultRouterState, RouterApp } from './routerApp';
import { WeightsApp } from './weightsTab';

interface TabsElement extends HTMLElement {
  selectedIndex: number;
}

const TABS = ['routing', 'weights'] as const;

let state: RouterState = parseRouterState(loadState()) ?? defaultRouterState();
const persist = (patch: Partial<RouterState>): void => {
  state = { ...state, ...patch };
  saveState(state);
};

const root = document.getElementById('app') ?? document.body.appendChild(document.createElement('main'));
const routingPanel = custom('vscode-tab-panel', { 'data-tab': 'routing' });
const weightsPanel = custom('vscode-tab-panel', { 'data-tab': 'weights' });
const tabs = custom<TabsElement>('vscode-tabs', { 'selected-index': TABS.indexOf(state.tab ?? 'routing') }, [
  custom('vscode-tab-header', { slot: 'header', 'data-tab-header': 'routing' }, ['Routing']),
  custom('vscode-tab-header', { slot: 'header', 'data-tab-header': 'weights' }, ['Weights']),
  routingPanel,
  weightsPanel,
]);
root.replaceChildren(tabs);

const routing = new RouterApp(routingPanel, state, persist);
const weights = new WeightsApp(weightsPanel, state, persist);

const show = (tab: (typeof TABS)[number]): void => {
  if (tabs.selectedIndex !== TABS.indexOf(tab)) tabs.selectedIndex = TABS.indexOf(tab);
  persist({ tab });
  weights.setVisible(tab === 'weights');
};
tabs.addEventListener('vsc-tabs-select', (ev) => {
  const i = (ev as CustomEvent<{ selectedIndex: number }>).detail.selectedIndex;
  show(TABS[i] ?? 'routing');
});

listenToHost(parseHostToRouter, (message: HostToRouterMessage) => {
  switch (message.type) {
    case 'init':
      routing.handle(message);
      weights.setTarget(message.weights?.target ?? null);
      show(message.weights?.show ? 'weights' : (state.tab ?? 'routing'));
      break;
    case 'analysisStatus':
    case 'analysisResult':
      weights.handle(message);
      break;
    default:
      routing.handle(message);
  }
});
postToHost({ type: 'ready' });
