/** Watching folders of mounted files (cacerts, JWKS, issuers file) for changes: fs.watch plus a poll. No imports from other folders. */
export { FolderWatcher, type FolderWatcherOptions } from './folder-watcher.js';
export { FollowedFile, type FollowedFileHandlers, type FollowedFileOptions } from './followed-file.js';
