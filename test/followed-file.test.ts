/**
 * src/watch FollowedFile: the one "followed file" check the JWKS file (--jwks-file) and --jwt-issuers-file
 * share. Real files in a Kubernetes-style `..data` volume; check() is called directly (the watcher's poll is
 * long), so each step is seen exactly once.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FollowedFile } from '../src/watch/index.js';
import { SecretVolume } from './helpers/k8s-volume.js';

type Report = { ok: string } | { failed: string };

describe('FollowedFile', () => {
  const stops: (() => void)[] = [];
  afterEach(() => stops.splice(0).forEach((s) => s()));

  function follow() {
    const dir = mkdtempSync(join(tmpdir(), 'followed-'));
    stops.push(() => rmSync(dir, { recursive: true, force: true }));
    const volume = new SecretVolume(dir);
    volume.write({ 'conf.txt': 'good 1' });
    const reports: Report[] = [];
    const file = new FollowedFile<Report>(
      { path: join(dir, 'conf.txt'), pollIntervalMs: 3_600_000 },
      {
        unreadable: (err) => new Error(`cannot be read (${err.code})`),
        apply: (text) => {
          if (!text.startsWith('good')) throw new Error(`refused "${text}"`);
          const r = { ok: text };
          reports.push(r);
          return r;
        },
        failed: (error) => {
          const r = { failed: error.message };
          reports.push(r);
          return r;
        },
      },
    );
    stops.push(() => file.stop());
    const first = file.read();
    file.follow(first);
    return { file, volume, first, reports };
  }

  it('applies new content once, ignores the same content, and reports a bad or unreadable file once per state', () => {
    const { file, volume, first, reports } = follow();
    expect(first).toBe('good 1');
    expect(file.check()).toBeUndefined(); // the content in use: nothing to do
    volume.write({ 'conf.txt': 'good 2' }); // a ..data swap
    expect(file.check()).toEqual({ ok: 'good 2' });
    expect(file.check()).toBeUndefined();
    volume.write({ 'conf.txt': 'bad' });
    expect(file.check()).toEqual({ failed: 'refused "bad"' });
    expect(file.check()).toBeUndefined(); // the same bad content is not reported again
    volume.write({ 'other.txt': 'x' }); // the file is gone from the new ..data
    expect(file.check()).toEqual({ failed: 'cannot be read (ENOENT)' });
    expect(file.check()).toBeUndefined();
    volume.write({ 'conf.txt': 'good 2' }); // back to the earlier good content: applied again
    expect(file.check()).toEqual({ ok: 'good 2' });
    expect(reports).toEqual([{ ok: 'good 2' }, { failed: 'refused "bad"' }, { failed: 'cannot be read (ENOENT)' }, { ok: 'good 2' }]);
  });

  it('read() throws the unreadable error; a stopped file checks nothing', () => {
    const { file, volume } = follow();
    volume.write({ 'other.txt': 'x' });
    expect(() => file.read()).toThrow('cannot be read (ENOENT)');
    file.stop();
    expect(file.check()).toBeUndefined();
  });
});
