/** Built-in workflow definitions register themselves here. */
import './inbound-message.ts';
