// The extension's side of the language server, under plain Node: the command it builds from
// the settings, and a session with that command through vscode-jsonrpc, the protocol layer of
// vscode-languageclient (the client the extension runs inside VS Code). `AHTSGD` names the
// executable to start; tests/vscode.rs sets it to the build under test.
'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { execFileSync, spawn } = require('child_process');
const rpc = require('vscode-jsonrpc/node');
const { serverCommand, documentSelector } = require('../server');
const { root } = require('./recipes');

const settings = (values) => ({ get: (key) => values[key] });

function commandFromSettings() {
  assert.deepStrictEqual(serverCommand(settings({})), { command: 'ahtsgd', args: ['lsp'] });
  assert.deepStrictEqual(serverCommand(settings({ path: '  ' })), { command: 'ahtsgd', args: ['lsp'] });
  assert.deepStrictEqual(serverCommand(settings({ path: ' /opt/bin/ahtsgd ' })), {
    command: '/opt/bin/ahtsgd',
    args: ['lsp'],
  });
  assert.deepStrictEqual(
    documentSelector.map((s) => s.language),
    ['aht', 'aht'],
  );
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'));
  assert.strictEqual(manifest.contributes.configuration.properties['ahtsgd.path'].default, 'ahtsgd');
  assert.deepStrictEqual(manifest.contributes.languages[0].extensions, ['.aht']);
}

function withTimeout(promise, what, ms = 30000) {
  return Promise.race([
    promise,
    // unref: a pending timer must not keep Node alive once the session is over
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref()),
  ]);
}

async function session() {
  const { command, args } = serverCommand(settings({ path: process.env.AHTSGD }));
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const connection = rpc.createMessageConnection(
    new rpc.StreamMessageReader(child.stdout),
    new rpc.StreamMessageWriter(child.stdin),
  );
  const published = [];
  let notify = () => {};
  connection.onNotification('textDocument/publishDiagnostics', (params) => {
    published.push(params);
    notify();
  });
  connection.listen();
  const nextDiagnostics = (uri) =>
    withTimeout(
      new Promise((resolve) => {
        const look = () => {
          const found = published.find((p) => p.uri === uri);
          if (found) resolve(found);
        };
        notify = look;
        look();
      }),
      `diagnostics for ${uri}`,
    );

  const init = await withTimeout(
    connection.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: {} }),
    'initialize',
  );
  for (const capability of ['hoverProvider', 'completionProvider', 'definitionProvider', 'renameProvider']) {
    assert(init.capabilities[capability], `server lacks ${capability}: ${JSON.stringify(init.capabilities)}`);
  }
  connection.sendNotification('initialized', {});

  // An unsaved recipe, as VS Code sends a new editor: the quickstart with a typo.
  const quickstart = fs.readFileSync(path.join(root, 'recipes', 'quickstart.aht'), 'utf8');
  const text = quickstart.replace('hidden = [256, 256]', 'hiden = [256, 256]');
  assert.notStrictEqual(text, quickstart, "the quickstart's model line moved");
  const uri = 'untitled:Untitled-1';
  connection.sendNotification('textDocument/didOpen', {
    textDocument: { uri, languageId: 'aht', version: 1, text },
  });
  const { diagnostics } = await nextDiagnostics(uri);
  const lines = text.split('\n');
  const line = lines.findIndex((l) => l.includes('hiden'));
  const at = diagnostics.find((d) => d.range.start.line === line);
  assert(at, `no diagnostic on line ${line + 1}: ${JSON.stringify(diagnostics)}`);
  assert.strictEqual(at.range.start.character, lines[line].indexOf('hiden'));
  assert.strictEqual(at.range.end.character, lines[line].indexOf('hiden') + 'hiden'.length);
  assert.match(at.message, /hiden/);

  const hover = await connection.sendRequest('textDocument/hover', {
    textDocument: { uri },
    position: { line: lines.findIndex((l) => l.includes('sigma = 0.01')), character: 4 },
  });
  assert(hover && JSON.stringify(hover.contents).includes('sigma'), JSON.stringify(hover));

  await withTimeout(connection.sendRequest('shutdown'), 'shutdown');
  connection.sendNotification('exit');
  assert.strictEqual(await withTimeout(exited, 'exit'), 0);
  connection.dispose();
}

async function main() {
  // extension.js needs VS Code's own module to run; here it is only compiled.
  execFileSync(process.execPath, ['--check', path.join(__dirname, '..', 'extension.js')]);
  commandFromSettings();
  await session();
  console.log('server: settings and a session with `ahtsgd lsp` passed');
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
