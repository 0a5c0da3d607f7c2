/**
 * Offline schema checks for Kubernetes objects, with the kubernetes-models packages (generated from the upstream
 * OpenAPI and CRD schemas): `new Model(obj).validate()` checks types, enums and required fields at run time;
 * the same packages' TypeScript interfaces, given each object as an object literal to `tsc`, reject any field
 * name the schema does not know (the run-time schemas allow unknown fields, so a typo would pass them).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');

// Kubernetes objects are free-form JSON here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type K8sObject = Record<string, any>;

/** The kubernetes-models module that holds a model for an apiVersion. */
function modelModule(apiVersion: string): string {
  const group = apiVersion.includes('/') ? apiVersion.slice(0, apiVersion.indexOf('/')) : '';
  if (group.endsWith('.istio.io')) return `@kubernetes-models/istio/${apiVersion}`;
  if (group === 'monitoring.coreos.com') return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

export interface Located {
  object: K8sObject;
  /** Where it came from, for messages: a file or a rendered folder. */
  origin: string;
}

/**
 * Kinds whose package models no spec: the IstioOperator CRD preserves unknown fields under spec (istioctl
 * checks spec itself), so only its top level can be checked for field names here.
 */
const FREE_FORM_SPEC = new Set(['IstioOperator']);

const label = (o: Located) => `${o.origin}: ${o.object.kind}/${o.object.metadata?.name ?? '?'}`;

/** Run-time validation against the upstream JSON schema; one message per object that fails. */
export async function validateAgainstSchemas(objects: Located[]): Promise<string[]> {
  const problems: string[] = [];
  for (const o of objects) {
    const { apiVersion, kind } = o.object as { apiVersion?: string; kind?: string };
    if (!apiVersion || !kind) {
      problems.push(`${label(o)}: no apiVersion or kind`);
      continue;
    }
    let Model: (new (data: K8sObject) => { validate(): void }) | undefined;
    try {
      Model = ((await import(modelModule(apiVersion))) as Record<string, typeof Model>)[kind];
    } catch {
      Model = undefined;
    }
    if (!Model) {
      problems.push(`${label(o)}: no model for ${apiVersion} ${kind} in the kubernetes-models packages`);
      continue;
    }
    try {
      new Model(structuredClone(o.object)).validate();
    } catch (err) {
      problems.push(`${label(o)}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/**
 * Unknown field names: each object becomes `const oN: IKind = <object>;` in a temp file that tsc checks with
 * excess-property checking. Returns one message per tsc error, naming the object it is in.
 */
export function unknownFields(objects: Located[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'svid-ca-k8s-types-'));
  try {
    const imports = new Map<string, string>();
    const lines: string[] = [];
    objects.forEach((o, i) => {
      const mod = modelModule(String(o.object.apiVersion));
      const alias = `M${imports.size}`;
      if (!imports.has(mod)) imports.set(mod, alias);
      const kind = String(o.object.kind);
      const { spec, ...top } = o.object;
      const literal = FREE_FORM_SPEC.has(kind) ? { ...top } : o.object;
      lines.push(`export const o${i}: ${imports.get(mod)}.I${kind} = ${JSON.stringify(literal)};${FREE_FORM_SPEC.has(kind) && spec !== undefined ? ' // spec: free-form in its CRD' : ''}`);
    });
    const header = [...imports].map(([mod, alias]) => `import type * as ${alias} from '${mod}';`);
    writeFileSync(join(dir, 'objects.ts'), [...header, ...lines].join('\n') + '\n');
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true, noEmit: true, skipLibCheck: true, target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext',
          types: [], baseUrl: ROOT, paths: { '*': [join(ROOT, 'node_modules', '*')] },
        },
        files: ['objects.ts'],
      }),
    );
    try {
      execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return [];
    } catch (err) {
      const out = `${(err as { stdout?: string }).stdout ?? ''}${(err as { stderr?: string }).stderr ?? ''}`;
      const problems = out
        .split('\n')
        .filter((l) => /error TS\d+/.test(l))
        .map((l) => {
          const line = Number(/objects\.ts\((\d+),/.exec(l)?.[1] ?? 0);
          const o = objects[line - 1 - header.length];
          return `${o ? label(o) : 'objects.ts'}: ${l.replace(/^.*error (TS\d+): /, '$1 ')}`;
        });
      return problems.length > 0 ? problems : [out.trim() || 'tsc failed without a message'];
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
