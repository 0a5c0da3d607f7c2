/** Watching folders of mounted files (cacerts, JWKS) for changes: fs.watch plus a poll. No imports from other folders. */
export { FolderWatcher, type FolderWatcherOptions } from './folder-watcher.js';
