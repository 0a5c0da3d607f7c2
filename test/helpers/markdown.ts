/** Markdown helpers for the documentation tests. */
import { readFileSync } from 'node:fs';

/** GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces to dashes. */
export function headingSlug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
}

/** The anchors of a Markdown file's headings (outside code blocks). */
export function anchorsOf(file: string): string[] {
  let fenced = false;
  const anchors: string[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (/^\s*(`{3,}|~{3,})/.test(line)) fenced = !fenced;
    else if (!fenced && /^#{1,6} /.test(line)) anchors.push(headingSlug(line.replace(/^#+ /, '')));
  }
  return anchors;
}
