// sendfile.c's exports, added to the module's in metalbox.c.
#ifndef METALBOX_SENDFILE_H
#define METALBOX_SENDFILE_H

#include <node_api.h>

#define METALBOX_SENDFILE_PROPERTIES 2

// Fills out[0 .. METALBOX_SENDFILE_PROPERTIES-1]: sendfileStart, sendfileCancel.
void metalbox_sendfile_properties(napi_property_descriptor *out);

#endif
